"""RandAugment (Cubuk et al. 2020) for clips: N operations drawn at random, each at magnitude M,
applied identically to every frame so that augmentation adds no motion of its own.

Operations and magnitude ranges follow the paper's ImageNet policy (M on a 0..10 scale; geometric
ops draw a random sign). All randomness is stateless, from the caller's seed. Written here
rather than taken from keras.layers.RandAugment, which draws per image from a stateful generator:
the frames of a clip would be augmented differently (fake motion) and a resumed run would not
repeat its batches.
"""

from __future__ import annotations

import math

import tensorflow as tf

MAX_MAGNITUDE = 10.0


def _blend(frames, degenerate, factor):
  return tf.clip_by_value(degenerate + factor * (frames - degenerate), 0.0, 255.0)


def _gray(frames):
  return tf.image.rgb_to_grayscale(frames)


def _transform(frames, matrix):
  """Applies a projective matrix [a0 a1 a2 b0 b1 b2 0 0] (output -> input pixel) to (T, H, W, 3)."""
  shape = tf.shape(frames)
  return tf.raw_ops.ImageProjectiveTransformV3(
    images=frames,
    transforms=tf.reshape(tf.cast(matrix, tf.float32), [1, 8]),
    output_shape=shape[1:3],
    fill_value=128.0,
    interpolation="BILINEAR",
    fill_mode="CONSTANT",
  )


def _rotate(frames, degrees):
  shape = tf.cast(tf.shape(frames), tf.float32)
  angle = degrees * math.pi / 180
  cy, cx = (shape[1] - 1) / 2, (shape[2] - 1) / 2
  cos, sin = tf.cos(angle), tf.sin(angle)
  return _transform(
    frames, [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0]
  )


def _operations(frames, level, sign):
  """The 14 operations at level in [0, 1] (M / 10)."""
  shape = tf.cast(tf.shape(frames), tf.float32)
  enhance = 1.0 + sign * 0.9 * level  # colour/contrast/brightness/sharpness factor in [0.1, 1.9]
  mean_gray = tf.reduce_mean(_gray(frames))
  smooth = tf.nn.depthwise_conv2d(
    frames,
    tf.tile(
      tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]])[:, :, None, None] / 13,
      [1, 1, 3, 1],
    ),
    [1, 1, 1, 1],
    "SAME",
  )
  bits = tf.cast(8 - tf.round(4 * level), tf.int32)
  shift = tf.cast(2 ** (8 - bits), tf.float32)
  low = tf.reduce_min(frames, axis=[0, 1, 2], keepdims=True)
  high = tf.reduce_max(frames, axis=[0, 1, 2], keepdims=True)
  return [
    lambda: frames,  # identity
    lambda: tf.where(
      high > low, (frames - low) * 255.0 / tf.maximum(high - low, 1e-3), frames
    ),  # autocontrast
    lambda: _blend(frames, _gray(frames), enhance),  # colour
    lambda: _blend(frames, tf.fill(tf.shape(frames), mean_gray), enhance),  # contrast
    lambda: _blend(frames, tf.zeros_like(frames), enhance),  # brightness
    lambda: _blend(frames, smooth, enhance),  # sharpness
    lambda: tf.floor(frames / shift) * shift,  # posterize
    lambda: tf.where(frames >= 256.0 - 256.0 * level, 255.0 - frames, frames),  # solarize
    lambda: tf.clip_by_value(
      frames + 110.0 * level * tf.cast(frames < 128.0, tf.float32), 0, 255
    ),  # solarize add
    lambda: _rotate(frames, sign * 30.0 * level),
    lambda: _transform(frames, [1.0, sign * 0.3 * level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]),  # shear x
    lambda: _transform(frames, [1.0, 0.0, 0.0, sign * 0.3 * level, 1.0, 0.0, 0.0, 0.0]),  # shear y
    lambda: _transform(
      frames, [1.0, 0.0, sign * 0.45 * level * shape[2], 0.0, 1.0, 0.0, 0.0, 0.0]
    ),  # translate x
    lambda: _transform(
      frames, [1.0, 0.0, 0.0, 0.0, 1.0, sign * 0.45 * level * shape[1], 0.0, 0.0]
    ),  # translate y
  ]


NUM_OPERATIONS = 14


def randaugment(frames: tf.Tensor, seed: tf.Tensor, num_ops: int, magnitude: float) -> tf.Tensor:
  """float32 (T, H, W, 3) in [0, 255] -> the same shape, num_ops random operations at magnitude."""
  level = tf.constant(magnitude / MAX_MAGNITUDE, tf.float32)
  for layer_seed in tf.unstack(tf.random.experimental.stateless_split(seed, num_ops)):
    choice_seed, sign_seed = tf.unstack(tf.random.experimental.stateless_split(layer_seed, 2))
    choice = tf.random.stateless_uniform([], choice_seed, 0, NUM_OPERATIONS, tf.int32)
    sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1.0, 1.0)
    frames = tf.switch_case(choice, _operations(frames, level, sign))
    frames.set_shape([None, None, None, 3])
  return frames
