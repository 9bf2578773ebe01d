"""Clip augmentation of the official recipe, in TensorFlow ops so that tf.data runs it in parallel.

Every random choice comes from a stateless seed given by the caller (derived from the run's seed
and the example's position in the stream), so that a resumed run augments exactly as before.
One crop and one flip apply to every frame of a clip.
"""
from __future__ import annotations

import tensorflow as tf

MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, as the official model expects
STD = (0.229, 0.224, 0.225)
SCALES = (1.0, 0.875, 0.75, 0.66)  # multi-scale crop sides, as fractions of the shorter side
MAX_DISTORT = 1  # crop height and width scales at most this many steps apart


def resize(frames: tf.Tensor, height: int, width: int) -> tf.Tensor:
  """uint8 or float (T, H, W, 3) -> float32 (T, height, width, 3) in [0, 255], bilinear."""
  return tf.image.resize(tf.cast(frames, tf.float32), (height, width), method="bilinear", antialias=True)


def crop_grid(image_h, image_w, crop_h, crop_w) -> tf.Tensor:
  """The 13 offsets (y, x) of the official 'more fixed crop' grid: corners, centre, edge
  midpoints and the four quarter points, on a 4 x 4 lattice of the free space."""
  h_step, w_step = (image_h - crop_h) // 4, (image_w - crop_w) // 4
  lattice = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2), (2, 0), (2, 4), (4, 2), (0, 2), (1, 1), (1, 3), (3, 1), (3, 3)]
  return tf.stack([tf.stack([y * h_step, x * w_step]) for y, x in lattice])


def multi_scale_crop(frames: tf.Tensor, seed: tf.Tensor, out_size: int) -> tf.Tensor:
  """The official training crop: height and width sides from SCALES x shorter side (at most one
  step apart), an offset from the 13-point grid, then a resize to out_size x out_size."""
  shape = tf.shape(frames)
  image_h, image_w = shape[1], shape[2]
  base = tf.cast(tf.minimum(image_h, image_w), tf.float32)
  sides = tf.cast(base * tf.constant(SCALES), tf.int32)
  pairs = tf.constant([(i, j) for i in range(len(SCALES)) for j in range(len(SCALES)) if abs(i - j) <= MAX_DISTORT])
  seeds = tf.random.experimental.stateless_split(seed, 2)
  pair = pairs[tf.random.stateless_uniform([], seeds[0], 0, pairs.shape[0], tf.int32)]
  crop_w, crop_h = sides[pair[0]], sides[pair[1]]
  grid = crop_grid(image_h, image_w, crop_h, crop_w)
  offset = grid[tf.random.stateless_uniform([], seeds[1], 0, 13, tf.int32)]
  cropped = frames[:, offset[0]:offset[0] + crop_h, offset[1]:offset[1] + crop_w]
  return tf.image.resize(cropped, (out_size, out_size), method="bilinear", antialias=True)


def center_crop(frames: tf.Tensor, out_size: int) -> tf.Tensor:
  shape = tf.shape(frames)
  top, left = (shape[1] - out_size) // 2, (shape[2] - out_size) // 2
  return frames[:, top:top + out_size, left:left + out_size]


def maybe_flip(frames: tf.Tensor, label: tf.Tensor, seed: tf.Tensor, no_flip_labels) -> tf.Tensor:
  """Horizontal flip with p = 0.5, never for classes whose meaning a flip changes."""
  flip = tf.random.stateless_uniform([], seed) < 0.5
  if no_flip_labels:
    flip = tf.logical_and(flip, tf.logical_not(tf.reduce_any(tf.equal(label, tf.constant(list(no_flip_labels))))))
  return tf.cond(flip, lambda: tf.reverse(frames, axis=[2]), lambda: frames)


def normalize(frames: tf.Tensor) -> tf.Tensor:
  """[0, 255] -> [0, 1] -> ImageNet mean and std."""
  return (frames / 255.0 - tf.constant(MEAN)) / tf.constant(STD)


def train_transform(frames, label, seed, *, resize_hw=(240, 320), out_size=224, no_flip_labels=()):
  frames = resize(frames, *resize_hw)
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  frames = multi_scale_crop(frames, crop_seed, out_size)
  frames = maybe_flip(frames, label, flip_seed, no_flip_labels)
  return normalize(frames)


def eval_transform(frames, *, resize_hw=(240, 320), out_size=224):
  return normalize(center_crop(resize(frames, *resize_hw), out_size))


def eval_views(frames, num_clips: int, num_crops: int, *, resize_hw=(240, 320), out_size=224):
  """Multi-view testing: (num_clips * T, H, W, 3) frames -> (num_clips * num_crops, T, S, S, 3),
  clip-major. Three crops sit at the start, centre and end of the longer side (TSM's
  full-resolution test offsets 0, 2 and 4 quarter steps), centred on the shorter one."""
  frames = resize(frames, *resize_hw)
  height, width = resize_hw
  if num_crops == 1:
    crops = [center_crop(frames, out_size)]
  else:
    along_width = width >= height
    free = (width if along_width else height) - out_size
    centre = ((height if along_width else width) - out_size) // 2
    crops = []
    for quarter in (0, 2, 4):
      offset = quarter * (free // 4)
      top, left = (centre, offset) if along_width else (offset, centre)
      crops.append(frames[:, top:top + out_size, left:left + out_size])
  views = tf.stack(crops)  # (crops, clips * T, S, S, 3)
  views = tf.reshape(views, [num_crops, num_clips, -1, out_size, out_size, 3])
  views = tf.transpose(views, [1, 0, 2, 3, 4, 5])
  return normalize(tf.reshape(views, [num_clips * num_crops, -1, out_size, out_size, 3]))
