"""Modules with parameters: conv+BN units, the SELFY block and the ResNet blocks."""

from stss_jax.layers.conv_bn import ConvBN, kaiming_fan_out
from stss_jax.layers.resnet_blocks import BasicBlock, Bottleneck
from stss_jax.layers.selfy import EXTRACTORS, SELFYBlock

__all__ = ["BasicBlock", "Bottleneck", "ConvBN", "EXTRACTORS", "SELFYBlock", "kaiming_fan_out"]
