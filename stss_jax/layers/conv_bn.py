"""Convolution + BatchNorm (+ ReLU), the unit every part of the network is built from."""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

# PyTorch's kaiming_normal_(mode="fan_out", nonlinearity="relu"): untruncated ("normal" in jax).
kaiming_fan_out = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")

BN_MOMENTUM = 0.9  # PyTorch's momentum 0.1 in flax's convention
BN_EPSILON = 1e-5


def batch_norm(features: int, *, zero_scale: bool = False, dtype, rngs: nnx.Rngs) -> nnx.BatchNorm:
  """BatchNorm over every axis but the last, with PyTorch's defaults; statistics in float32."""
  return nnx.BatchNorm(
      features,
      momentum=BN_MOMENTUM,
      epsilon=BN_EPSILON,
      dtype=dtype,
      scale_init=nnx.initializers.zeros if zero_scale else nnx.initializers.ones,
      rngs=rngs,
  )


class ConvBN(nnx.Module):
  """A bias-free convolution over the two axes before the channels, then BN and maybe ReLU.

  Every axis before those two is a batch axis, so (N, T, H, W, C) clips, (N, T, h, w, L, U, V, C)
  similarity volumes and (N, T, L, h, w, C) stacks all go through the same 2-D kernel.
  """

  def __init__(
      self,
      in_features: int,
      out_features: int,
      kernel_size: int | Sequence[int],
      *,
      strides: int | Sequence[int] = 1,
      padding: int | Sequence[int] = 0,
      relu: bool = True,
      zero_scale: bool = False,
      dtype=jnp.float32,
      rngs: nnx.Rngs,
  ):
    kernel_size = _pair(kernel_size)
    padding = [(p, p) for p in _pair(padding)]
    self.conv = nnx.Conv(
        in_features,
        out_features,
        kernel_size,
        strides=_pair(strides),
        padding=padding,
        use_bias=False,
        kernel_init=kaiming_fan_out,
        dtype=dtype,
        rngs=rngs,
    )
    self.bn = batch_norm(out_features, zero_scale=zero_scale, dtype=dtype, rngs=rngs)
    self.relu = relu

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.bn(self.conv(x))
    return nnx.relu(x) if self.relu else x


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
  return (value, value) if isinstance(value, int) else tuple(value)
