"""A training clip's last resize, crop -> image_size, done where the batch lands.

With `config.input.resize_on_accelerator` the tf.data pipeline stops after the crop and the flip:
each clip's crop travels padded at the bottom and right to the largest box the crop mode draws
(transforms.crop_bounds), with its (height, width). The train step then resizes it here, on the
accelerator, which takes the costliest op of a clip off the CPU (benchmarks/results/input_pipeline.md).

The resize is PIL's bilinear one, as the official pipeline's: a triangle filter, widened by the
scale when the crop shrinks, its weights renormalised over the crop (never over the padding), and
the result rounded to pixels as transforms.to_pixels rounds. It runs as two small matrix products
per clip, with whichever array library holds the clips (jax inside the step, numpy on the host).
"""
from __future__ import annotations

import numpy as np


def triangle_weights(xp, lengths, out_size: int, padded: int):
  """(N,) crop lengths -> (N, out_size, padded) float32 weights: output i of a crop of length n
  reads source pixel x with PIL's bilinear weight for the scale n / out_size; zero at x >= n."""
  lengths = xp.asarray(lengths).astype(np.float32)[:, None, None]
  scale = lengths / out_size
  width = xp.maximum(scale, 1.0)  # the filter's support: wider than a pixel when shrinking
  centre = (xp.arange(out_size, dtype=np.float32)[None, :, None] + 0.5) * scale
  source = xp.arange(padded, dtype=np.float32)[None, None, :]
  weights = xp.maximum(0.0, 1.0 - xp.abs((source + 0.5 - centre) / width))
  weights = xp.where(source < lengths, weights, 0.0)
  return weights / xp.sum(weights, axis=-1, keepdims=True)


def resize_crops(clips, crop_hw, out_size: int, xp=None, precision=None):
  """uint8 (N, T, Hp, Wp, 3) crops, each in the top-left corner of its padding, and their (N, 2)
  sizes -> uint8 (N, T, out_size, out_size, 3). `xp`: jax.numpy or numpy, by default that of
  `clips` (jax arrays and tracers: jax.numpy). `precision`: of jax's products, a jax.lax precision
  or DotAlgorithmPreset; by default three bfloat16 products per float32 one, as accurate here as
  float32 products and 1.7x faster on an H200 (benchmarks/results/gpu.md). TF32 would round
  pixel values: 2.5% of them a level off."""
  if xp is None:
    xp = np if isinstance(clips, np.ndarray) else _jax().numpy
  crop_hw = xp.asarray(crop_hw)
  rows = triangle_weights(xp, crop_hw[:, 0], out_size, clips.shape[2])
  columns = triangle_weights(xp, crop_hw[:, 1], out_size, clips.shape[3])
  pixels = clips.astype(np.float32)
  if precision is None and xp is not np:
    precision = _jax().lax.DotAlgorithmPreset.BF16_BF16_F32_X3
  extra = {} if xp is np else {"precision": precision}
  # Two products, along the width and then the height (numpy's einsum would loop over all seven
  # indices at once).
  narrow = xp.einsum("nthwc,njw->nthjc", pixels, columns, **extra)
  resized = xp.einsum("nih,nthjc->ntijc", rows, narrow, **extra)
  return xp.clip(resized + 0.5, 0.0, 255.0).astype(np.uint8)


def _jax():
  import jax  # only where the clips are jax arrays: the input pipeline needs no jax

  return jax
