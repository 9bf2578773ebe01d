"""The SELFY block: STSS transformation, extraction, integration and a residual connection.

Attribute names follow the official PyTorch module (stss_transformation.downsample,
stss_extraction.conv0..3, stss_integration.conv0..2, conv3_fuse, upsample) so that imported
weights map one to one. Shapes use N clips, T frames, (H, W) the block's input resolution,
(h, w) the STSS resolution (half of it) and (L, U, V) the window.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from stss_jax import ops, runtime
from stss_jax.layers.conv_bn import ConvBN, aligned_cells, batch_norm, update_running_statistics
from stss_jax.ops.stss import check_window, resolve_temporal_offsets

EXTRACTORS = ("conv", "soft_argmax", "mlp")
# "dense": the extraction's convolutions as matrix products over each flattened (u, v) plane
# (faster on the CPU and the GPU alike, see benchmarks/results); "conv": convolution kernels.
EXTRACTION_IMPLEMENTATIONS = runtime.EXTRACTION_FORMS


class STSSTransformation(nnx.Module):
  """Stride-2 3x3 conv to `hidden` channels, then the STSS of the result."""

  def __init__(
    self,
    in_features: int,
    hidden: int,
    window: Sequence[int],
    implementation: str | None = None,
    temporal_offsets: Sequence[int] = (),
    *,
    dtype,
    rngs: nnx.Rngs,
  ):
    self.window = check_window(window)
    self.temporal_offsets = resolve_temporal_offsets(window, temporal_offsets)
    self.implementation = implementation  # None: the runtime policy's, when traced
    self.downsample = ConvBN(in_features, hidden, 3, strides=2, padding=1, dtype=dtype, rngs=rngs)

  def __call__(self, clips: jax.Array) -> jax.Array:
    """(N, T, H, W, C) -> (N, T, h, w, L, U, V), L the number of temporal offsets."""
    return self.similarities(self.downsample(clips))

  def similarities(self, features: jax.Array, l_major: bool = False) -> jax.Array:
    """The STSS of the downsampled features (N, T, h, w, hidden): (N, T, h, w, L, U, V), or
    (N, T, L, h, w, U, V) if `l_major`."""
    implementation = self.implementation or runtime.current().stss
    return ops.stss(features, self.window, implementation, self.temporal_offsets, l_major)


def _conv_output_size(size: int, stride: int, padding: int) -> int:
  return (size + 2 * padding - 3) // stride + 1


class ConvExtraction(nnx.Module):
  """Four (1, 3, 3) convs over (l, u, v) that shrink each (u, v) plane to one feature vector.

  For the official 9x9 plane the sizes go 9 -> 9 -> 5 -> 3 -> 1 exactly as the authors' code.
  Smaller planes, where a padding-free last conv would not fit, get a padded last conv, and
  whatever extent remains is averaged, so every odd window works.
  """

  def __init__(
    self,
    window: Sequence[int],
    channels: Sequence[int],
    dense: bool | None = None,
    *,
    dtype,
    rngs: nnx.Rngs,
  ):
    _, U, V = window
    self.dense = dense  # None: the runtime policy's extraction form, when traced
    c0, c1, c2, c3 = channels
    self.conv0 = ConvBN(1, c0, 3, strides=1, padding=1, dtype=dtype, rngs=rngs)
    self.conv1 = ConvBN(c0, c1, 3, strides=2, padding=1, dtype=dtype, rngs=rngs)
    self.conv2 = ConvBN(c1, c2, 3, strides=2, padding=1, dtype=dtype, rngs=rngs)
    plane = [_conv_output_size(_conv_output_size(s, 2, 1), 2, 1) for s in (U, V)]
    last_padding = tuple(0 if s >= 3 else 1 for s in plane)
    self.conv3 = ConvBN(c2, c3, 3, strides=1, padding=last_padding, dtype=dtype, rngs=rngs)
    self.out_features = c3

  def __call__(self, stss: jax.Array) -> jax.Array:
    """(..., U, V) similarity planes -> (..., D), any leading axes."""
    convs = (self.conv0, self.conv1, self.conv2, self.conv3)
    dense = self.dense if self.dense is not None else runtime.current().extraction == "dense"
    if not dense:
      x = stss[..., None]
      for conv in convs:
        x = conv(x)
      return jnp.mean(x, axis=(-3, -2))
    *batch, U, V = stss.shape
    x = stss.reshape(*batch, U * V)
    x = jnp.pad(x, [(0, 0)] * len(batch) + [(0, aligned_cells(U * V, 1) - U * V)])
    plane = (U, V)
    for conv in convs:
      x, plane = conv.dense(x, plane)
    cells = plane[0] * plane[1]
    return jnp.mean(x[..., : cells * self.out_features].reshape(*batch, cells, -1), axis=-2)


class SoftArgmaxExtraction(nnx.Module):
  """The paper's explicit-displacement extractor.

  For each l, a softmax over the (u, v) plane (similarity / temperature) gives the expected
  offset (du, dv) of the best match; a 1x1 conv + BN + ReLU embeds the L displacement vectors.
  """

  def __init__(
    self, window: Sequence[int], out_features: int, temperature: float, *, dtype, rngs: nnx.Rngs
  ):
    if temperature <= 0:
      raise ValueError(f"selfy.temperature must be > 0, got {temperature}")
    self.temperature = temperature
    self.embed = ConvBN(2, out_features, 1, dtype=dtype, rngs=rngs)
    self.out_features = out_features

  def __call__(self, stss: jax.Array) -> jax.Array:
    """(..., U, V) similarity planes -> (..., D), any leading axes."""
    U, V = stss.shape[-2:]
    offsets = jnp.stack(
      jnp.meshgrid(jnp.arange(U) - U // 2, jnp.arange(V) - V // 2, indexing="ij"), axis=-1
    ).reshape(U * V, 2)
    logits = stss.reshape(*stss.shape[:-2], -1).astype(jnp.float32) / self.temperature
    displacement = jax.nn.softmax(logits, axis=-1) @ offsets.astype(jnp.float32)
    # One-pixel "image" per (position, l) so the 1x1 conv applies over the last axis.
    return self.embed(displacement[..., None, None, :].astype(stss.dtype))[..., 0, 0, :]


class MLPExtraction(nnx.Module):
  """The paper's MLP extractor: two 1x1 layers (+ BN + ReLU) over each flattened (u, v) plane."""

  def __init__(self, window: Sequence[int], out_features: int, *, dtype, rngs: nnx.Rngs):
    _, U, V = window
    self.fc0 = ConvBN(U * V, out_features, 1, dtype=dtype, rngs=rngs)
    self.fc1 = ConvBN(out_features, out_features, 1, dtype=dtype, rngs=rngs)
    self.out_features = out_features

  def __call__(self, stss: jax.Array) -> jax.Array:
    """(..., U, V) similarity planes -> (..., D), any leading axes."""
    planes = stss.reshape(*stss.shape[:-2], 1, 1, -1)
    return self.fc1(self.fc0(planes))[..., 0, 0, :]


class STSSIntegration(nnx.Module):
  """Per-l 3x3 convs over (h, w), an l-major fuse, and the stride-2 1x1 transposed conv back."""

  def __init__(
    self,
    in_features: int,
    out_features: int,
    num_offsets: int,
    channels: Sequence[int],
    *,
    dtype,
    rngs: nnx.Rngs,
  ):
    L = num_offsets
    c0, c1, c2, c3 = channels
    self.conv0 = ConvBN(in_features, c0, 3, padding=1, dtype=dtype, rngs=rngs)
    self.conv1 = ConvBN(c0, c1, 3, padding=1, dtype=dtype, rngs=rngs)
    self.conv2 = ConvBN(c1, c2, 3, padding=1, dtype=dtype, rngs=rngs)
    self.conv3_fuse = ConvBN(L * c2, c3, 3, padding=1, dtype=dtype, rngs=rngs)
    # A 1x1 transposed conv of stride 2 is a 1x1 projection written at even positions.
    self.upsample = nnx.Conv(
      c3,
      out_features,
      (1, 1),
      use_bias=False,
      kernel_init=_transposed_kaiming,
      dtype=dtype,
      rngs=rngs,
    )
    self.upsample_bn = batch_norm(out_features, zero_scale=True, dtype=dtype, rngs=rngs)

  def __call__(self, features: jax.Array, out_size: tuple[int, int]) -> jax.Array:
    """(N, T, L, h, w, D) -> (N, T, H, W, C) with (H, W) = out_size; l is a batch axis of the
    per-l convs."""
    n, t, L, h, w, _ = features.shape
    x = self.conv2(self.conv1(self.conv0(features)))
    x = jnp.moveaxis(x, 2, 4).reshape(n, t, h, w, -1)  # channel = l * D + d
    x = self.upsample(self.conv3_fuse(x))
    height, width = out_size
    if not (2 * h - 1 <= height <= 2 * h and 2 * w - 1 <= width <= 2 * w):
      raise ValueError(f"cannot upsample a {h}x{w} STSS map to the block input {height}x{width}")
    return interleaved_batch_norm(self.upsample_bn, x, out_size)


def interleaved_batch_norm(bn: nnx.BatchNorm, x: jax.Array, out_size: tuple[int, int]) -> jax.Array:
  """bn applied to the (N, T, H, W, C) map that holds x (N, T, h, w, C) at its even (h, w)
  positions and zeros elsewhere (the stride-2 transposed conv's output), without normalising the
  zeros one by one: statistics come from x alone (zeros add nothing to the sums, only to the
  count), and every zero becomes the same per-channel value. Same result and running statistics
  as bn on the padded map, a quarter of the reduction work."""
  n, t, h, w, c = x.shape
  height, width = out_size
  share = h * w / (height * width)  # of the map's positions that hold x
  values = x.astype(jnp.float32)
  if bn.use_running_average:
    mean, var = bn.mean[...], bn.var[...]
  else:
    mean = jnp.mean(values, axis=(0, 1, 2, 3)) * share
    var = jnp.maximum(
      jnp.mean(jnp.square(values), axis=(0, 1, 2, 3)) * share - jnp.square(mean), 0.0
    )
    update_running_statistics(bn, mean, var)
  multiplier = bn.scale[...] * jax.lax.rsqrt(var + bn.epsilon)
  at_zero = bn.bias[...] - mean * multiplier  # what every zero of the map becomes
  compact = (values * multiplier).astype(bn.dtype or x.dtype)  # x's positions, less at_zero
  padding = [(0, 0, 0), (0, 0, 0), (0, height - 2 * h + 1, 1), (0, width - 2 * w + 1, 1), (0, 0, 0)]
  return jax.lax.pad(compact, jnp.zeros((), compact.dtype), padding) + at_zero.astype(compact.dtype)


def _transposed_kaiming(key, shape, dtype=jnp.float32):
  """PyTorch's fan_out kaiming init of a ConvTranspose weight (in, out, 1, 1, 1).

  PyTorch reads that weight's first axis, the *input* channels, as fan_out.
  """
  fan_out = shape[-2]
  return jax.random.normal(key, shape, dtype) * jnp.sqrt(2.0 / fan_out).astype(dtype)


class SELFYBlock(nnx.Module):
  """Adds the motion features learned from the STSS to its input: ReLU(x + integration(...))."""

  def __init__(
    self,
    in_features: int,
    hidden: int = 128,
    window: Sequence[int] = (5, 9, 9),
    ext_channels: Sequence[int] = (4, 16, 64, 64),
    int_channels: Sequence[int] = (64, 64, 64, 64),
    extractor: str = "conv",
    temperature: float = 0.01,
    stss_implementation: str | None = None,  # None: the runtime policy's (stss_jax.runtime)
    extraction_implementation: str | None = None,
    temporal_offsets: Sequence[int] = (),
    *,
    dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    window = check_window(window)
    if len(ext_channels) != 4 or len(int_channels) != 4:
      raise ValueError(
        f"ext_channels and int_channels need 4 entries each, got {ext_channels} and {int_channels}"
      )
    if stss_implementation is not None and stss_implementation not in ops.stss_implementations:
      raise ValueError(
        f"stss_implementation must be one of {ops.stss_implementations}, got "
        f"{stss_implementation!r}"
      )
    self.stss_transformation = STSSTransformation(
      in_features, hidden, window, stss_implementation, temporal_offsets, dtype=dtype, rngs=rngs
    )
    if (
      extraction_implementation is not None
      and extraction_implementation not in EXTRACTION_IMPLEMENTATIONS
    ):
      raise ValueError(
        f"extraction_implementation must be one of {EXTRACTION_IMPLEMENTATIONS}, "
        f"got {extraction_implementation!r}"
      )
    if extractor == "conv":
      self.stss_extraction = ConvExtraction(
        window,
        ext_channels,
        None if extraction_implementation is None else extraction_implementation == "dense",
        dtype=dtype,
        rngs=rngs,
      )
    elif extractor == "soft_argmax":
      self.stss_extraction = SoftArgmaxExtraction(
        window, ext_channels[-1], temperature, dtype=dtype, rngs=rngs
      )
    elif extractor == "mlp":
      self.stss_extraction = MLPExtraction(window, ext_channels[-1], dtype=dtype, rngs=rngs)
    else:
      raise ValueError(f"selfy.extractor must be one of {EXTRACTORS}, got {extractor!r}")
    self.stss_integration = STSSIntegration(
      self.stss_extraction.out_features,
      in_features,
      len(self.stss_transformation.temporal_offsets),
      int_channels,
      dtype=dtype,
      rngs=rngs,
    )

  def __call__(self, clips: jax.Array) -> jax.Array:
    """(N, T, H, W, C) -> (N, T, H, W, C)."""
    downsampled = self.stss_transformation.downsample(clips)  # (N, T, h, w, hidden)
    extract = _extract_rematerialised if runtime.current().selfy_remat else _extract
    features = extract(self, downsampled)  # (N, T, L, h, w, D)
    motion = self.stss_integration(features, clips.shape[2:4])
    return nnx.relu(clips + motion)


def _extract(block: SELFYBlock, downsampled: jax.Array) -> jax.Array:
  """Similarities, then the extraction's motion features (N, T, L, h, w, D)."""
  # l before (h, w): the extraction's rows then come out in the order the integration's per-l
  # convs read them (the gather form writes that order, so no transpose pass is left).
  stss = block.stss_transformation.similarities(downsampled, l_major=True)  # (N, T, L, h, w, U, V)
  return block.stss_extraction(stss)


# The backward pass recomputes the similarities and the extraction from the downsampled features:
# of the block's activations only those and the motion features are kept.
_extract_rematerialised = nnx.remat(_extract)
