"""Whole networks: TSN/TSM ResNets with SELFY blocks, and build_model(config)."""

from stss_jax.models.selfynet import DEPTHS, ResNet, SELFYNet, build_model

__all__ = ["DEPTHS", "ResNet", "SELFYNet", "build_model"]
