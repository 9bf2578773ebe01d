"""Convolution + BatchNorm (+ ReLU), the unit every part of the network is built from."""
from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
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
    self.strides, self.padding = _pair(strides), _pair(padding)
    self.conv = nnx.Conv(
        in_features,
        out_features,
        kernel_size,
        strides=self.strides,
        padding=[(p, p) for p in self.padding],
        use_bias=False,
        kernel_init=kaiming_fan_out,
        dtype=dtype,
        rngs=rngs,
    )
    self.bn = batch_norm(out_features, zero_scale=zero_scale, dtype=dtype, rngs=rngs)
    self.relu = relu

  def __call__(self, x: jax.Array, dense: bool = False) -> jax.Array:
    """`dense`: run the convolution as one matrix product over each flattened plane (see
    dense_conv), for the tiny planes of the STSS where that beats a convolution kernel."""
    if dense:
      kernel = self.conv.kernel[...].astype(self.conv.dtype or x.dtype)
      x = dense_conv(x.astype(kernel.dtype), kernel, self.strides, self.padding)
    else:
      x = self.conv(x)
    x = self.bn(x)
    return nnx.relu(x) if self.relu else x


def dense_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: tuple[int, int]) -> jax.Array:
  """A 2-D convolution of (..., H, W, Cin) planes as one matrix product per plane.

  The kernel (kh, kw, Cin, Cout) is spread into the (H*W*Cin, H'*W'*Cout) matrix of the
  convolution (zero padding and stride included). For the SELFY extraction's 9x9 planes with 1 to
  64 channels this turns four poorly occupied convolution launches over ~10^5 planes into dense
  products for the matrix units, at the price of multiplying by the zeros of that matrix.
  """
  *batch, height, width, in_features = x.shape
  kh, kw, _, out_features = kernel.shape
  taps, (out_h, out_w) = _conv_taps(height, width, kh, kw, strides, padding)
  matrix = jnp.einsum("iot,tab->iaob", taps.astype(kernel.dtype), kernel.reshape(kh * kw, in_features, out_features))
  matrix = matrix.reshape(height * width * in_features, out_h * out_w * out_features)
  y = x.reshape(*batch, height * width * in_features) @ matrix
  return y.reshape(*batch, out_h, out_w, out_features)


@functools.lru_cache(maxsize=64)
def _conv_taps(height, width, kh, kw, strides, padding):
  """(H*W, H'*W', kh*kw) 0/1: the kernel tap that links each input cell to each output cell."""
  (sh, sw), (ph, pw) = strides, padding
  out_h, out_w = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
  taps = np.zeros((height * width, out_h * out_w, kh * kw), np.float32)
  for o1, o2, a, b in itertools.product(range(out_h), range(out_w), range(kh), range(kw)):
    i, j = o1 * sh - ph + a, o2 * sw - pw + b
    if 0 <= i < height and 0 <= j < width:
      taps[i * width + j, o1 * out_w + o2, a * kw + b] = 1.0
  return taps, (out_h, out_w)


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
  return (value, value) if isinstance(value, int) else tuple(value)
