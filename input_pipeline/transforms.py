"""Clip augmentation of the official recipe, in TensorFlow ops so that tf.data runs it in parallel.

Every random choice comes from a stateless seed given by the caller (derived from the run's seed
and the example's position in the stream), so that a resumed run augments exactly as before.
One crop and one flip apply to every frame of a clip.
"""

from __future__ import annotations

import math

import tensorflow as tf

from input_pipeline import augment
from input_pipeline.crop_sizes import MAX_DISTORT, SCALES, crop_bounds


def resize(frames: tf.Tensor, height: int, width: int) -> tf.Tensor:
  """uint8 or float (..., H, W, 3) -> float32 (..., height, width, 3) in [0, 255], bilinear, with
  an antialiasing filter when a side shrinks (as PIL's bilinear resize of the official code).
  Enlarging skips the antialiased kernel, which gives the same values (within 1e-4) 8x slower."""
  frames = tf.cast(frames, tf.float32)
  shape = tf.shape(frames)
  shrinks = tf.logical_or(shape[-3] > height, shape[-2] > width)
  return tf.cond(
    shrinks,
    lambda: tf.image.resize(frames, (height, width), method="bilinear", antialias=True),
    lambda: tf.image.resize(frames, (height, width), method="bilinear"),
  )


def resized_crop(frames: tf.Tensor, resize_hw, box: tf.Tensor) -> tf.Tensor:
  """uint8 or float (T, H, W, 3) -> float32 (T, box height, box width, 3): the box (top, left,
  height, width) of `resize(frames, *resize_hw)`. When a side shrinks, only the box is resampled,
  with resize's antialiased kernel (the costly one): the same values within 0.01."""
  frames = tf.cast(frames, tf.float32)
  shape = tf.shape(frames)
  height, width = resize_hw

  def box_only():
    scale = tf.constant([height, width], tf.float32) / tf.cast(shape[1:3], tf.float32)
    return tf.raw_ops.ScaleAndTranslate(
      images=frames,
      size=box[2:],
      scale=scale,
      translation=-tf.cast(box[:2], tf.float32),
      kernel_type="triangle",
      antialias=True,
    )

  def whole_then_box():
    return resize(frames, height, width)[:, box[0] : box[0] + box[2], box[1] : box[1] + box[3]]

  return tf.cond(tf.logical_or(shape[1] > height, shape[2] > width), box_only, whole_then_box)


def crop_grid(image_h, image_w, crop_h, crop_w) -> tf.Tensor:
  """The 13 offsets (y, x) of the official 'more fixed crop' grid: corners, centre, edge
  midpoints and the four quarter points, on a 4 x 4 lattice of the free space."""
  h_step, w_step = (image_h - crop_h) // 4, (image_w - crop_w) // 4
  lattice = [
    (0, 0),
    (0, 4),
    (4, 0),
    (4, 4),
    (2, 2),
    (2, 0),
    (2, 4),
    (4, 2),
    (0, 2),
    (1, 1),
    (1, 3),
    (3, 1),
    (3, 3),
  ]
  return tf.stack([tf.stack([y * h_step, x * w_step]) for y, x in lattice])


def multi_scale_box(seed: tf.Tensor, image_h, image_w) -> tf.Tensor:
  """The official training crop (top, left, height, width) in an image_h x image_w frame: sides
  from SCALES x shorter side (at most MAX_DISTORT steps apart), offset from the 13-point grid."""
  base = tf.cast(tf.minimum(image_h, image_w), tf.float32)
  sides = tf.cast(base * tf.constant(SCALES), tf.int32)
  pairs = tf.constant(
    [(i, j) for i in range(len(SCALES)) for j in range(len(SCALES)) if abs(i - j) <= MAX_DISTORT]
  )
  seeds = tf.random.experimental.stateless_split(seed, 2)
  pair = pairs[tf.random.stateless_uniform([], seeds[0], 0, pairs.shape[0], tf.int32)]
  crop_w, crop_h = sides[pair[0]], sides[pair[1]]
  grid = crop_grid(image_h, image_w, crop_h, crop_w)
  offset = grid[tf.random.stateless_uniform([], seeds[1], 0, 13, tf.int32)]
  return tf.stack([offset[0], offset[1], crop_h, crop_w])


CROPS = ("multi_scale", "random_resized")
RANDOM_RESIZED_AREA = (0.25, 1.0)  # fraction of the frame a random resized crop keeps
RANDOM_RESIZED_ASPECT = (3 / 4, 4 / 3)


def random_resized_box(seed: tf.Tensor, image_h, image_w) -> tf.Tensor:
  """Inception-style crop (top, left, height, width): area and aspect ratio drawn at random."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
    tf.stack([image_h, image_w, 3]),
    tf.zeros([1, 0, 4]),
    seed,
    min_object_covered=0.0,
    aspect_ratio_range=RANDOM_RESIZED_ASPECT,
    area_range=RANDOM_RESIZED_AREA,
    use_image_if_no_bounding_boxes=True,
  )
  return tf.stack([begin[0], begin[1], size[0], size[1]])


def train_box(crop: str, seed: tf.Tensor, image_h, image_w) -> tf.Tensor:
  if crop == "multi_scale":
    return multi_scale_box(seed, image_h, image_w)
  if crop == "random_resized":
    return random_resized_box(seed, image_h, image_w)
  raise ValueError(f"config.input.train_crop = {crop!r}: use one of {CROPS}")


def center_crop(frames: tf.Tensor, out_size: int) -> tf.Tensor:
  shape = tf.shape(frames)
  top, left = (shape[1] - out_size) // 2, (shape[2] - out_size) // 2
  return frames[:, top : top + out_size, left : left + out_size]


def flip_decision(label: tf.Tensor, seed: tf.Tensor, no_flip_labels) -> tf.Tensor:
  """Whether a clip is mirrored: p = 0.5, never for classes whose meaning a flip changes."""
  flip = tf.random.stateless_uniform([], seed) < 0.5
  if no_flip_labels:
    flip = tf.logical_and(
      flip, tf.logical_not(tf.reduce_any(tf.equal(label, tf.constant(list(no_flip_labels)))))
    )
  return flip


def maybe_flip(frames: tf.Tensor, label: tf.Tensor, seed: tf.Tensor, no_flip_labels) -> tf.Tensor:
  """Horizontal flip with p = 0.5, never for classes whose meaning a flip changes."""
  return tf.cond(
    flip_decision(label, seed, no_flip_labels), lambda: tf.reverse(frames, axis=[2]), lambda: frames
  )


def to_pixels(frames: tf.Tensor) -> tf.Tensor:
  """float (..., 3) in [0, 255] -> uint8, rounded half up as PIL rounds its resized pixels."""
  return tf.cast(tf.clip_by_value(frames + 0.5, 0.0, 255.0), tf.uint8)


JPEG_SCALES = (8, 4, 2)  # the DCT-domain downscalings of libjpeg that decode_jpeg offers
JPEG_RATIOS = (*JPEG_SCALES, 1)


def jpeg_ratio_index(shape: tf.Tensor, resize_hw) -> tf.Tensor:
  """The index in JPEG_RATIOS of the largest downscaling that keeps a frame of `shape` (h, w, ...)
  at least resize_hw: a frame twice the size it is resized to is never fully decoded."""
  fits = [tf.reduce_all(shape[:2] >= tf.constant(resize_hw) * ratio) for ratio in JPEG_SCALES]
  return tf.argmax(tf.cast(tf.stack([*fits, tf.constant(True)]), tf.int32), output_type=tf.int32)


def decode_at_least(jpeg: tf.Tensor, height: int, width: int) -> tf.Tensor:
  """JPEG bytes -> uint8 (h, w, 3), downscaled in the DCT domain as jpeg_ratio_index says."""
  index = jpeg_ratio_index(tf.io.extract_jpeg_shape(jpeg), (height, width))
  return tf.switch_case(
    index, [lambda r=r: tf.io.decode_jpeg(jpeg, channels=3, ratio=r) for r in JPEG_RATIOS]
  )


def decode_resized(encoded: tf.Tensor, resize_hw) -> tf.Tensor:
  """JPEG bytes (T,) -> uint8 (T, height, width, 3): each frame decoded, resized and rounded to
  pixels (frames already at resize_hw, as prepared data stores them, skip the resize)."""
  height, width = resize_hw

  def frame(jpeg):
    image = decode_at_least(jpeg, height, width)
    shape = tf.shape(image)
    return tf.cond(
      tf.logical_and(shape[0] == height, shape[1] == width),
      lambda: image,
      lambda: to_pixels(resize(image[None], height, width)[0]),
    )

  return tf.map_fn(frame, encoded, fn_output_signature=tf.TensorSpec([height, width, 3], tf.uint8))


def decode_cropped(
  encoded: tf.Tensor, box: tf.Tensor, resize_hw, window: tf.Tensor | None = None
) -> tf.Tensor:
  """JPEG bytes (T,) -> uint8 (T, box height, box width, 3), the box given in resize_hw
  coordinates. A frame stored at resize_hw is decoded only inside the box (much less work);
  any other frame is decoded (downscaled by libjpeg where it is twice the size), resized within
  the box and rounded to pixels. With a window (top, left, height, width) that holds the box: that
  window instead, whose pixels outside the box are the frame's own (decoded at resize_hw) or zeros
  (resized: the costly resize stays inside the box)."""
  height, width = resize_hw

  def frame(jpeg):
    shape = tf.io.extract_jpeg_shape(jpeg)
    at_size = tf.logical_and(shape[0] == height, shape[1] == width)
    if window is None:
      return tf.cond(
        at_size, lambda: tf.io.decode_and_crop_jpeg(jpeg, box, channels=3), lambda: resized(jpeg)
      )
    return tf.cond(
      at_size,
      lambda: tf.io.decode_and_crop_jpeg(jpeg, window, channels=3),
      lambda: place_in_window(resized(jpeg)[None], box, window)[0],
    )

  def resized(jpeg):
    return to_pixels(resized_crop(decode_at_least(jpeg, height, width)[None], resize_hw, box)[0])

  return tf.map_fn(frame, encoded, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def place_in_window(frames: tf.Tensor, box: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
  """(T, box height, box width, 3) -> (T, window height, window width, 3): the frames at the box's
  place in the window (both in frame coordinates), zeros around them. Concatenated, not tf.pad:
  TensorFlow pads uint8 frames at under 1 GB/s on one core, slower than it concatenates them."""
  top, left = box[0] - window[0], box[1] - window[1]
  bottom, right = window[2] - top - box[2], window[3] - left - box[3]
  count = tf.shape(frames)[0]
  zeros = lambda rows, columns: tf.zeros([count, rows, columns, 3], frames.dtype)  # noqa: E731
  frames = tf.concat([zeros(box[2], left), frames, zeros(box[2], right)], axis=2)
  return tf.concat([zeros(top, window[3]), frames, zeros(bottom, window[3])], axis=1)


def first_resize_region(source_hw, resize_hw, bounds) -> tuple[int, int]:
  """The largest region of a decoded source_hw frame (decoded as decode_at_least decodes it) that
  the first resize of a bounds-sized box reads (source_region), or bounds if that is larger: the
  shape the regions of such frames travel in. (Python, for the element spec: jpeg_ratio_index's
  rule again.)"""
  decoded = list(source_hw)
  for ratio in JPEG_SCALES:
    if all(s >= r * ratio for s, r in zip(source_hw, resize_hw)):
      decoded = [-(-s // ratio) for s in source_hw]
      break
  region = []
  for size, resized, bound in zip(decoded, resize_hw, bounds):
    scale = size / resized
    region.append(max(bound, math.ceil(bound * scale + 2 * max(scale, 1.0) + 3)))
  return tuple(region)


def source_region(
  box: tf.Tensor, window: tf.Tensor, source_hw: tf.Tensor, resize_hw
) -> tuple[tf.Tensor, tf.Tensor]:
  """The region (top, left, height, width) of a decoded source_hw frame that the first resize of
  `box` (resize_hw coordinates) reads, and the (2, 3) first_resize that makes the window (which
  holds the box) of that region: per axis the source pixels per resized pixel, the shift of the
  window's first centre from the region's start, and the region's length
  (crop_resize.resize_regions)."""
  scale = tf.cast(source_hw, tf.float32) / tf.constant(resize_hw, tf.float32)
  support = tf.maximum(scale, 1.0)
  start, stop = tf.cast(box[:2], tf.float32), tf.cast(box[:2] + box[2:], tf.float32)
  low = tf.maximum(0, tf.cast(tf.floor((start + 0.5) * scale - support - 0.5), tf.int32))
  high = tf.minimum(
    source_hw, tf.cast(tf.math.ceil((stop - 0.5) * scale + support - 0.5), tf.int32) + 1
  )
  shift = tf.cast(window[:2], tf.float32) * scale - tf.cast(low, tf.float32)
  return tf.concat([low, high - low], 0), tf.stack(
    [scale, shift, tf.cast(high - low, tf.float32)], axis=1
  )


def decode_region(
  encoded: tf.Tensor, box: tf.Tensor, window: tf.Tensor, resize_hw, region_hw
) -> tuple[tf.Tensor, tf.Tensor]:
  """JPEG bytes (T,) of frames not at resize_hw -> (uint8 (T, *region_hw, 3), (2, 3) first_resize):
  each frame decoded (downscaled by libjpeg as decode_at_least does) only over the source region
  that the first resize of `box` reads, in the top-left corner of zeros; the first resize is left
  to crop_resize.resize_regions. Frames of unlike sizes, or a region larger than region_hw, take
  the CPU's first resize instead (decode_cropped's window, with a first_resize that copies it)."""
  shapes = tf.map_fn(
    lambda jpeg: tf.io.extract_jpeg_shape(jpeg)[:2], encoded, fn_output_signature=tf.int32
  )
  shape = shapes[0]
  index = jpeg_ratio_index(shape, resize_hw)
  ratio = tf.gather(JPEG_RATIOS, index)
  region, first_resize = source_region(box, window, (shape + ratio - 1) // ratio, resize_hw)
  corner = tf.zeros([2], tf.int32)
  padded = tf.concat([corner, region_hw], 0)

  def decoded_region():
    def frame(jpeg):
      branches = [
        lambda r=r: tf.io.decode_and_crop_jpeg(jpeg, region, channels=3, ratio=r)
        for r in JPEG_RATIOS
      ]
      return tf.switch_case(index, branches)

    frames = tf.map_fn(frame, encoded, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
    return place_in_window(frames, tf.concat([corner, region[2:]], 0), padded), first_resize

  def resized_window():
    frames = decode_cropped(encoded, box, resize_hw, window)
    copy = tf.stack([tf.ones([2]), tf.zeros([2]), tf.cast(window[2:], tf.float32)], axis=1)
    return place_in_window(frames, tf.concat([corner, window[2:]], 0), padded), copy

  usable = tf.logical_and(
    tf.reduce_all(shapes == shape), tf.reduce_all(region[2:] <= tf.constant(region_hw))
  )
  return tf.cond(usable, decoded_region, resized_window)


def _finish_training_clip(
  frames, label, seed, out_size, no_flip_labels, randaugment_ops, randaugment_magnitude
):
  """The crop -> the clip."""
  # Flipped before the resize, which commutes with it: on the crop's pixels, the fewest bytes.
  frames = resize(maybe_flip(frames, label, seed, no_flip_labels), out_size, out_size)
  if randaugment_ops:
    frames = augment.randaugment(
      frames,
      tf.random.experimental.stateless_fold_in(seed, 1),
      randaugment_ops,
      randaugment_magnitude,
    )
  return to_pixels(frames)


def crop_window(box: tf.Tensor, resize_hw, bounds) -> tf.Tensor:
  """The bounds-sized window (top, left, height, width) of a resize_hw frame that holds `box`,
  as near its top-left corner as the frame allows."""
  return tf.stack(
    [
      tf.minimum(box[0], resize_hw[0] - bounds[0]),
      tf.minimum(box[1], resize_hw[1] - bounds[1]),
      *bounds,
    ]
  )


def _deferred_clip(window_frames, box, window, label, flip_seed, no_flip_labels):
  """What a deferred clip carries: its window's frames, the crop's box in the window, the flip."""
  return (
    window_frames,
    tf.stack([box[0] - window[0], box[1] - window[1], box[2], box[3]]),
    flip_decision(label, flip_seed, no_flip_labels),
  )


def train_transform(
  frames,
  label,
  seed,
  *,
  resize_hw=(240, 320),
  out_size=224,
  no_flip_labels=(),
  crop="multi_scale",
  randaugment_ops=0,
  randaugment_magnitude=9.0,
  defer_resize=False,
):
  """Decoded uint8 frames (T, H, W, 3) -> a uint8 training clip (T, out_size, out_size, 3):
  resize to resize_hw, one crop for the clip (`crop` in CROPS), flip unless the label is in
  no_flip_labels, resize to out_size, optionally RandAugment; each resize rounded to pixels as
  PIL's. The clip is normalised where the model takes it (normalization.model_input).
  defer_resize: stop at the crop and return (the crop in its crop_bounds window of the resized
  frames, zeros around it; the crop's (4,) box in that window; whether to flip) for
  input_pipeline.crop_resize (no RandAugment then)."""
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  box = train_box(crop, crop_seed, *resize_hw)
  frames = to_pixels(resized_crop(frames, resize_hw, box))
  if defer_resize:
    window = crop_window(box, resize_hw, crop_bounds(crop, resize_hw))
    return _deferred_clip(
      place_in_window(frames, box, window), box, window, label, flip_seed, no_flip_labels
    )
  return _finish_training_clip(
    frames, label, flip_seed, out_size, no_flip_labels, randaugment_ops, randaugment_magnitude
  )


def train_transform_jpeg(
  encoded,
  label,
  seed,
  *,
  resize_hw=(240, 320),
  out_size=224,
  no_flip_labels=(),
  crop="multi_scale",
  randaugment_ops=0,
  randaugment_magnitude=9.0,
  defer_resize=False,
  region_hw=None,
):
  """train_transform for JPEG bytes (T,): the same clip, decoding only what the crop keeps (with
  defer_resize: what its window keeps). region_hw (with defer_resize, for frames not stored at
  resize_hw): the first resize is deferred too, and the clip is (decode_region's region and
  first_resize, the crop's box in its window, the flip)."""
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  box = train_box(crop, crop_seed, *resize_hw)
  if defer_resize:
    window = crop_window(box, resize_hw, crop_bounds(crop, resize_hw))
    if region_hw is not None:
      region, first_resize = decode_region(encoded, box, window, resize_hw, region_hw)
      return (*_deferred_clip(region, box, window, label, flip_seed, no_flip_labels), first_resize)
    return _deferred_clip(
      decode_cropped(encoded, box, resize_hw, window), box, window, label, flip_seed, no_flip_labels
    )
  frames = decode_cropped(encoded, box, resize_hw)
  return _finish_training_clip(
    frames, label, flip_seed, out_size, no_flip_labels, randaugment_ops, randaugment_magnitude
  )


def eval_views(frames, num_clips: int, num_crops: int, *, resize_hw=(240, 320), out_size=224):
  """Multi-view testing: (num_clips * T, resize_h, resize_w, 3) frames, already resized ->
  (num_clips * num_crops, T, S, S, 3) of the same dtype (uint8 pixels from the video sources),
  clip-major. Three crops sit at the start, centre and end
  of the longer side (TSM's full-resolution test offsets 0, 2 and 4 quarter steps), centred on
  the shorter one."""
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
      crops.append(frames[:, top : top + out_size, left : left + out_size])
  views = tf.stack(crops)  # (crops, clips * T, S, S, 3)
  views = tf.reshape(views, [num_crops, num_clips, -1, out_size, out_size, 3])
  views = tf.transpose(views, [1, 0, 2, 3, 4, 5])
  return tf.reshape(views, [num_clips * num_crops, -1, out_size, out_size, 3])
