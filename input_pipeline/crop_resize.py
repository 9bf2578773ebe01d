"""A training clip's last resize, crop -> image_size, and its flip, done where the batch lands.

With `config.input.resize_on_accelerator` the tf.data pipeline stops after the crop's decoding:
each clip travels as a fixed-size window of its resized frames (transforms.crop_bounds) that holds
its crop, with the crop's box inside the window (top, left, height, width) and whether the clip is
mirrored. The train step then resizes and flips it here, on the accelerator. That takes the
costliest ops of a clip off the CPU: the resize, and TensorFlow's uint8 flip and padding, which
run at a few hundred MB/s (benchmarks/results/input_pipeline.md).

The resize is PIL's bilinear one, as the official pipeline's: a triangle filter, widened by the
scale when the crop shrinks, its weights renormalised over the crop (never over the rest of the
window), and the result rounded to pixels as transforms.to_pixels rounds. A flip reverses the
order of the output columns, which is the same as resizing the mirrored crop. It runs as two small
matrix products per clip, with whichever array library holds the clips (jax inside the step, numpy
on the host).
"""
from __future__ import annotations

import numpy as np


def triangle_weights(xp, starts, lengths, out_size: int, window: int):
  """(N,) crop starts and lengths along one axis of a window -> (N, out_size, window) float32
  weights: output i reads window pixel x with PIL's bilinear weight for the scale
  length / out_size; zero outside [start, start + length)."""
  starts = xp.asarray(starts).astype(np.float32)[:, None, None]
  lengths = xp.asarray(lengths).astype(np.float32)[:, None, None]
  scale = lengths / out_size
  width = xp.maximum(scale, 1.0)  # the filter's support: wider than a pixel when shrinking
  centre = (xp.arange(out_size, dtype=np.float32)[None, :, None] + 0.5) * scale
  source = xp.arange(window, dtype=np.float32)[None, None, :] - starts
  weights = xp.maximum(0.0, 1.0 - xp.abs((source + 0.5 - centre) / width))
  weights = xp.where((source >= 0) & (source < lengths), weights, 0.0)
  return weights / xp.sum(weights, axis=-1, keepdims=True)


def resize_crops(clips, boxes, out_size: int, flips=None, xp=None, precision=None):
  """uint8 (N, T, Hw, Ww, 3) windows, the (N, 4) boxes (top, left, height, width) of their crops
  and optionally (N,) flips -> uint8 (N, T, out_size, out_size, 3): each crop resized, and
  mirrored where flips is true. `xp`: jax.numpy or numpy, by default that of `clips` (jax arrays
  and tracers: jax.numpy). `precision`: of jax's products, a jax.lax precision or
  DotAlgorithmPreset; by default three bfloat16 products per float32 one, as accurate here as
  float32 products and 1.7x faster on an H200 (benchmarks/results/gpu.md). TF32 would round pixel
  values: 2.5% of them a level off."""
  if xp is None:
    xp = np if isinstance(clips, np.ndarray) else _jax().numpy
  boxes = xp.asarray(boxes)
  rows = triangle_weights(xp, boxes[:, 0], boxes[:, 2], out_size, clips.shape[2])
  columns = triangle_weights(xp, boxes[:, 1], boxes[:, 3], out_size, clips.shape[3])
  if flips is not None:
    columns = xp.where(xp.asarray(flips).astype(bool)[:, None, None], columns[:, ::-1], columns)
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
