"""Convolution + BatchNorm (+ ReLU), the unit every part of the network is built from."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from stss_jax import runtime

# PyTorch's kaiming_normal_(mode="fan_out", nonlinearity="relu"): untruncated ("normal" in jax).
kaiming_fan_out = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")

# The name of every training-mode BN input (batch_norm_relu), i.e. of every convolution's output:
# what a rematerialised residual block with remat_saves="bn_inputs" keeps (models.selfynet).
BN_INPUT = "bn_input"
BN_STATISTICS = "bn_statistics"  # and of its batch mean and variance, which that block keeps too

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

  def __call__(self, x: jax.Array) -> jax.Array:
    return conv_bn_relu(self.conv, self.bn, x, self.relu)

  def dense(self, planes: jax.Array, plane: tuple[int, int]) -> tuple[jax.Array, tuple[int, int]]:
    """The same layer on flattened planes, as one matrix product per plane (see dense_matrix).

    planes: (..., F) with the (H, W, Cin) plane flattened into its first H*W*Cin entries; entries
    after them (alignment padding) are ignored. Returns the (H', W', Cout) outputs flattened the
    same way and padded to a multiple of the runtime policy's row alignment, and (H', W'). For the
    tiny planes of the STSS this beats a convolution kernel.
    """
    kernel = self.conv.kernel[...].astype(self.conv.dtype or planes.dtype)
    matrix, out_plane, out_cells = dense_matrix(
      kernel, plane, planes.shape[-1], self.strides, self.padding
    )
    y = planes.astype(kernel.dtype) @ matrix
    *batch, _ = y.shape
    cells = y.reshape(*batch, out_cells, kernel.shape[-1])
    y = batch_norm_relu(self.bn, cells, self.relu, real_cells=out_plane[0] * out_plane[1])
    return y.reshape(*batch, -1), out_plane


def aligned_cells(cells: int, channels: int) -> int:
  """The fewest cells >= `cells` whose cells * channels entries are a multiple of the runtime
  policy's row alignment."""
  alignment = runtime.current().row_alignment
  while (cells * channels) % alignment:
    cells += 1
  return cells


def dense_matrix(
  kernel: jax.Array,
  plane: tuple[int, int],
  in_entries: int,
  strides: tuple[int, int],
  padding: tuple[int, int],
) -> tuple[jax.Array, tuple[int, int], int]:
  """The (in_entries, out_cells * Cout) matrix of a 2-D convolution of flattened planes.

  The kernel (kh, kw, Cin, Cout) is spread over every (input cell, output cell) pair it links
  (zero padding and stride included); rows past the H*W*Cin plane entries and columns past the
  H'*W' output cells are zero, so padded entries neither contribute nor receive anything. For
  the SELFY extraction's 9x9 planes with 1 to 64 channels this turns four poorly occupied
  convolution launches over ~10^5 planes into dense products for the matrix units, at the price
  of multiplying by the zeros of that matrix. Returns the matrix, (H', W') and out_cells.
  """
  height, width = plane
  kh, kw, in_features, out_features = kernel.shape
  taps, out_plane = _conv_taps(height, width, kh, kw, strides, padding)
  matrix = jnp.einsum(
    "iot,tab->iaob", taps.astype(kernel.dtype), kernel.reshape(kh * kw, in_features, out_features)
  )
  cells = out_plane[0] * out_plane[1]
  out_cells = aligned_cells(cells, out_features)
  matrix = matrix.reshape(height * width * in_features, cells * out_features)
  if in_entries < height * width * in_features:
    raise ValueError(f"{in_entries} entries cannot hold a {height}x{width}x{in_features} plane")
  matrix = jnp.pad(
    matrix, ((0, in_entries - matrix.shape[0]), (0, (out_cells - cells) * out_features))
  )
  return matrix, out_plane, out_cells


def conv_bn_relu(conv: nnx.Conv, bn: nnx.BatchNorm, x: jax.Array, relu: bool = True) -> jax.Array:
  """batch_norm_relu(bn, conv(x), relu). With running statistics (inference) the BN is folded
  into the convolution: its per-channel multiplier scales the kernel and its shift is added as a
  bias, which XLA hands to cuDNN with the ReLU (and a residual addition that follows) as one fused
  convolution, instead of a convolution and an elementwise pass over its output."""
  if not bn.use_running_average:
    return batch_norm_relu(bn, conv(x), relu)
  multiplier, shift = _running_affine(bn)
  y = _convolve(conv, x, conv.kernel[...] * multiplier)
  y = y + shift.astype(y.dtype)
  return jnp.maximum(y, 0) if relu else y


def _convolve(conv: nnx.Conv, x: jax.Array, kernel: jax.Array) -> jax.Array:
  """conv(x) with `kernel` in place of conv's own, for the project's convolutions: 2-D, explicit
  padding, no dilation or groups, every axis before the last three a batch axis."""
  dtype = conv.dtype or x.dtype
  flat = x.reshape(-1, *x.shape[-3:]).astype(dtype)
  y = jax.lax.conv_general_dilated(
    flat,
    kernel.astype(dtype),
    conv.strides,
    conv.padding,
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    precision=conv.precision,
  )
  return y.reshape(*x.shape[:-3], *y.shape[1:])


def batch_norm_relu(
  bn: nnx.BatchNorm, x: jax.Array, relu: bool = True, real_cells: int | None = None
) -> jax.Array:
  """bn(x), then ReLU if asked: every BN of the network but the upsample's goes through here in
  training; in inference, those that conv_bn_relu does not fold (the dense extraction's).

  Same function and running statistics as nnx.BatchNorm (biased batch variance, float32
  statistics), written for fewer passes over x in training mode: both moments come from one
  reduction, and the backward is the closed-form BN gradient (one reduction and one elementwise
  pass, recomputing the ReLU mask from x) instead of autodiff's chain of separate passes.
  real_cells: only the first real_cells entries of axis -2 are data; the rest must be zeros
  (alignment padding), which add nothing to the sums and are left out of the count. Their
  outputs are meaningless, and their cotangents must be zero (the next product ignores them).
  """
  if bn.use_running_average:
    multiplier, shift = _running_affine(bn)
    y = x.astype(jnp.float32) * multiplier + shift
    return (jnp.maximum(y, 0.0) if relu else y).astype(bn.dtype or x.dtype)
  scale, bias = bn.scale[...], bn.bias[...]
  x = checkpoint_name(x, BN_INPUT)
  count = x.size // x.shape[-1]
  if real_cells is not None:
    count = count // x.shape[-2] * real_cells
  mean, var = checkpoint_name(_moments(jax.lax.stop_gradient(x), count), BN_STATISTICS)
  y = _batch_norm_train(x, mean, var, scale, bias, bn.epsilon, relu, count)
  update_running_statistics(bn, mean, var)
  return y.astype(bn.dtype or x.dtype)


def _running_affine(bn: nnx.BatchNorm) -> tuple[jax.Array, jax.Array]:
  """BN with its running statistics as y = x * multiplier + shift, per channel (float32)."""
  multiplier = bn.scale[...] * jax.lax.rsqrt(bn.var[...] + bn.epsilon)
  return multiplier, bn.bias[...] - bn.mean[...] * multiplier


def update_running_statistics(bn: nnx.BatchNorm, mean: jax.Array, var: jax.Array) -> None:
  """Moves bn's running mean and (biased) variance towards a batch's, by bn.momentum."""
  mean, var = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)
  bn.mean[...] = bn.momentum * bn.mean[...] + (1 - bn.momentum) * mean
  bn.var[...] = bn.momentum * bn.var[...] + (1 - bn.momentum) * var


def _sums(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-channel sums of a and b over every axis but the last, in one reduction (one pass)."""
  zero = jnp.zeros((), jnp.float32)
  return jax.lax.reduce(
    (a, b), (zero, zero), lambda p, q: (p[0] + q[0], p[1] + q[1]), tuple(range(a.ndim - 1))
  )


def _moments(x: jax.Array, count: int) -> tuple[jax.Array, jax.Array]:
  """Per-channel mean and biased variance of x in float32, both from one reduction."""
  values = x.astype(jnp.float32)
  total, total_squares = _sums(values, values * values)
  mean = total / count
  return mean, jnp.maximum(total_squares / count - mean * mean, 0.0)


# The batch's moments come in as arguments, computed outside (under stop_gradient) so that a
# rematerialised block can keep them (BN_STATISTICS) and recompute y without another reduction.
# The backward is the full BN gradient, their dependence on x included; theirs is zero.
@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _batch_norm_train(x, mean, var, scale, bias, epsilon, relu, count):
  return _batch_norm_train_fwd(x, mean, var, scale, bias, epsilon, relu, count)[0]


def _batch_norm_train_fwd(x, mean, var, scale, bias, epsilon, relu, count):
  inv_std = jax.lax.rsqrt(var + epsilon)
  multiplier = scale * inv_std
  shift = bias - mean * multiplier
  y = x.astype(jnp.float32) * multiplier + shift
  if relu:
    y = jnp.maximum(y, 0.0)
  return y.astype(x.dtype), (x, mean, inv_std, multiplier, shift)


def _batch_norm_train_bwd(epsilon, relu, count, residuals, grad_y):
  x, mean, inv_std, multiplier, shift = residuals
  grad = grad_y.astype(jnp.float32)
  # On the GPU the barrier keeps XLA from merging the ReLU mask below with the forward's `y > 0`:
  # merged, the forward writes the mask (a byte per entry) for the backward to read twice; apart,
  # the backward recomputes it from x, which it reads anyway (benchmarks/results/gpu.md).
  # Elsewhere it is left out: there it would only reorder rounding.
  if jax.default_backend() == "gpu":
    x, multiplier, shift = jax.lax.optimization_barrier((x, multiplier, shift))
  values = x.astype(jnp.float32)
  if relu:
    grad = jnp.where(values * multiplier + shift > 0, grad, 0.0)
  normalized = (values - mean) * inv_std
  grad_bias, grad_scale = _sums(grad, grad * normalized)
  grad_x = multiplier * (grad - (grad_bias + normalized * grad_scale) / count)
  return grad_x.astype(x.dtype), jnp.zeros_like(mean), jnp.zeros_like(mean), grad_scale, grad_bias


_batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


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
