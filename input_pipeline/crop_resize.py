"""A training clip's resizes (the last, crop -> image_size; from raw frames the first too) and its
flip, done where the batch lands.

With `config.input.resize_on_accelerator` the tf.data pipeline stops after the crop's decoding:
each clip travels as a fixed-size window of its resized frames (crop_sizes.crop_bounds) that holds
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

From raw JPEG frames the first resize (frame -> config.input.resize_hw) moves here as well: the
clip travels as the region of its decoded frames that the crop's window reads, with each axis's
'first_resize' (scale, shift, length), and resize_regions makes the window of it first, rounded
to pixels as the CPU's first resize is.
"""

from __future__ import annotations

import numpy as np


def bilinear_weights(xp, scales, shifts, starts, stops, out_size: int, source_size: int):
  """(N,) per-clip values along one axis -> (N, out_size, source_size) float32 weights: output i
  is centred at source coordinate (i + 0.5) * scale + shift and reads source pixel x with PIL's
  bilinear weight (a triangle, widened by the scale when it shrinks), renormalised over the
  pixels in [start, stop) (an output that reads none of them gets zeros)."""
  column = lambda values: xp.asarray(values).astype(np.float32)[:, None, None]  # noqa: E731
  scales, shifts, starts, stops = column(scales), column(shifts), column(starts), column(stops)
  width = xp.maximum(scales, 1.0)  # the filter's support: wider than a pixel when shrinking
  centre = (xp.arange(out_size, dtype=np.float32)[None, :, None] + 0.5) * scales + shifts
  source = xp.arange(source_size, dtype=np.float32)[None, None, :]
  weights = xp.maximum(0.0, 1.0 - xp.abs((source + 0.5 - centre) / width))
  weights = xp.where((source >= starts) & (source < stops), weights, 0.0)
  total = xp.sum(weights, axis=-1, keepdims=True)
  return weights / xp.where(total > 0, total, 1.0)


def triangle_weights(xp, starts, lengths, out_size: int, window: int):
  """(N,) crop starts and lengths along one axis of a window -> (N, out_size, window) weights
  that resize each crop to out_size."""
  lengths = xp.asarray(lengths).astype(np.float32)
  starts = xp.asarray(starts).astype(np.float32)
  return bilinear_weights(
    xp, lengths / out_size, starts, starts, starts + lengths, out_size, window
  )


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
  return _separable(xp, clips, rows, columns, precision)


def resize_regions(regions, first_resize, window_hw, xp=None, precision=None):
  """uint8 (N, T, Hr, Wr, 3) regions of decoded frames, each in the top-left corner of its
  padding, and their (N, 2, 3) first_resize (per axis: the source pixels per resized pixel, the
  shift of the window's first centre, the region's length) -> uint8 (N, T, *window_hw, 3): the
  windows of the resized frames (transforms.source_region)."""
  if xp is None:
    xp = np if isinstance(regions, np.ndarray) else _jax().numpy
  first_resize = xp.asarray(first_resize)
  scales, shifts, lengths = (first_resize[:, :, k] for k in range(3))
  rows, columns = (
    bilinear_weights(
      xp,
      scales[:, a],
      shifts[:, a],
      xp.zeros_like(lengths[:, a]),
      lengths[:, a],
      window_hw[a],
      regions.shape[2 + a],
    )
    for a in (0, 1)
  )
  return _separable(xp, regions, rows, columns, precision)


def _separable(xp, clips, rows, columns, precision):
  """Each clip's frames times rows (N, H', H) on the left and columns (N, W', W) on the right,
  rounded to uint8 pixels as transforms.to_pixels rounds."""
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
