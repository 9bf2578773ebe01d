"""Training and evaluation batches from videos on disk: frame folders, video files or TFDS builds
(input_pipeline.prepare).

The example stream is a pure function of (seed, position): position i of the training stream is
video permutation(seed, i // N)[i % N], its frames are drawn with a generator seeded by
(seed, i) and its augmentation with the stateless seed (seed, i). A run resumed at step s starts
the stream at position s * global_batch and sees exactly what it would have seen. Each host
reads only its slice of every global batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from input_pipeline import allocator, augment, sampling, transforms
from input_pipeline import frames as frame_io
from input_pipeline.labels import Video
from input_pipeline.tfds_source import TfdsSplit


class FileSplit:
  """Videos named by the dataset's label files, read from frame folders (as JPEG bytes) or
  from video files (decoded with PyAV). A split holds one kind, that of its first video."""

  def __init__(self, videos: Sequence[Video], frame_template: str = "{:05d}.jpg"):
    self.videos = list(videos)
    self.frame_template = frame_template
    self.encoded = bool(self.videos) and self.videos[0].path.is_dir()

  def __len__(self) -> int:
    return len(self.videos)

  def label(self, i: int) -> int:
    return self.videos[i].label

  def video_id(self, i: int) -> str:
    return self.videos[i].video_id

  def read(self, i: int, sample) -> tuple[np.ndarray, np.ndarray]:
    """The frames `sample(num_frames)` picks (JPEG bytes (T,) or uint8 (T, H, W, 3)) and their
    0-based indices in the video."""
    video = self.videos[i]
    if self.encoded:
      files = frame_io.frame_files(video.path, self.frame_template)
      indices = sample(len(files))
      return frame_io.read_jpegs([files[k] for k in indices]), indices
    if video.path.is_dir():
      raise frame_io.UnreadableVideoError(f"{video.path}: a frame folder in a split of video files")
    decoded = frame_io.decode_video(video.path, video.start_frame or 0, video.end_frame)
    indices = sample(len(decoded))
    return decoded[indices], indices + (video.start_frame or 0)


Split = FileSplit | TfdsSplit
# Training videos (spread over the split) whose first frames size the regions that raw JPEG frames
# travel in with resize_on_accelerator: one small read each, once per training iterator.
REGION_SAMPLE = 16


@dataclasses.dataclass
class VideoSource:
  train: Split
  evaluation: Split
  class_names: Sequence[str]
  num_frames: int  # T, segments per clip
  image_size: int = 224  # crop side
  resize_hw: tuple[int, int] = (240, 320)  # every frame is resized to this first
  seed: int = 0
  no_flip_labels: tuple[int, ...] = ()  # classes whose meaning a horizontal flip changes
  dense: bool = False  # TSM dense sampling instead of TSN segments
  eval_clips: int = 1  # evaluation views in time: clips per video
  eval_crops: int = 1  # evaluation views in space: 1 (centre) or 3 (along the longer side)
  train_crop: str = "multi_scale"  # one of transforms.CROPS
  randaugment_ops: int = 0  # RandAugment operations per training clip (0: off)
  randaugment_magnitude: float = 9.0  # RandAugment magnitude, 0..10
  # Training clips end at a window of the resized frames that holds the crop, with the crop's box
  # and the flip; the train step resizes and flips them (input_pipeline.crop_resize).
  resize_on_accelerator: bool = False

  def __post_init__(self):
    self._permutations: dict[int, np.ndarray] = {}
    # a clip's buffers reused, not faulted in again (allocator's docstring)
    allocator.keep_heap_tops()
    if self.eval_crops not in (1, 3):
      raise ValueError(f"config.input.eval_crops = {self.eval_crops}: use 1 or 3")
    if self.eval_clips < 1 or (self.dense and self.eval_clips > 1):
      raise ValueError(
        f"config.input.eval_clips = {self.eval_clips}: use >= 1 (1 with dense sampling)"
      )
    if self.train_crop not in transforms.CROPS:
      raise ValueError(
        f"config.input.train_crop = {self.train_crop!r}: use one of {transforms.CROPS}"
      )
    if self.randaugment_ops < 0 or not 0 <= self.randaugment_magnitude <= augment.MAX_MAGNITUDE:
      raise ValueError(
        f"config.input.randaugment_ops = {self.randaugment_ops} must be >= 0 and "
        f"randaugment_magnitude = {self.randaugment_magnitude} within 0..{augment.MAX_MAGNITUDE}"
      )
    if self.resize_on_accelerator and self.randaugment_ops:
      raise ValueError(
        f"config.input.resize_on_accelerator = True needs config.input.randaugment_ops = 0 "
        f"(got {self.randaugment_ops}): RandAugment works on the resized clip, on the CPU"
      )

  def _indices(self, num_frames: int, rng, num_clips: int = 1) -> np.ndarray:
    if self.dense:
      return sampling.dense_indices(num_frames, self.num_frames, rng)
    if rng is None:
      return sampling.eval_indices(num_frames, self.num_frames, num_clips).reshape(-1)
    return sampling.train_indices(num_frames, self.num_frames, rng)

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch not in self._permutations:
      self._permutations = {
        epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.train))
      }
    return self._permutations[epoch]

  def train_example(self, position: int):
    """Stream position -> (frames, 0-based indices, label, id): the Python part of a training clip,
    run by tf.data through numpy_function (so under the GIL, whatever the number of cores)."""
    count = len(self.train)
    for attempt in range(
      count
    ):  # a broken video is skipped for the next one, the same way each time
      epoch, slot = divmod(int(position) + attempt, count)
      i = self._permutation(epoch)[slot]
      rng = np.random.default_rng([self.seed, int(position)])
      try:
        frames, indices = self.train.read(i, lambda n: self._indices(n, rng))  # noqa: B023
        return (
          frames,
          indices.astype(np.int32),
          np.int32(self.train.label(i)),
          self.train.video_id(i),
        )
      except frame_io.UnreadableVideoError as e:
        logging.warning("skipping %s", e)
    raise frame_io.UnreadableVideoError("no training video could be read")

  def eval_indices(self, num_frames: int) -> np.ndarray:
    """The frames an evaluation samples from a video of `num_frames`: (eval_clips * T,), clip after
    clip."""
    return self._indices(num_frames, None, self.eval_clips)

  def eval_example(self, split: Split, i: int):
    """Evaluation frames of video i (all views' frames, clip after clip), their indices, label,
    id."""
    frames, indices = split.read(i, self.eval_indices)
    return frames, indices.astype(np.int32), np.int32(split.label(i)), split.video_id(i)

  def eval_views(self, frames: tf.Tensor, encoded: bool) -> tf.Tensor:
    """eval_example's frames -> uint8 views (clips x crops, T, S, S, 3), normalised where the
    model takes them (normalization.model_input)."""
    frames = (
      transforms.decode_resized(frames, self.resize_hw)
      if encoded
      else transforms.to_pixels(transforms.resize(frames, *self.resize_hw))
    )
    return transforms.eval_views(
      frames, self.eval_clips, self.eval_crops, resize_hw=self.resize_hw, out_size=self.image_size
    )

  def _frames_type(self, split: Split) -> tf.DType:
    return tf.string if split.encoded else tf.uint8

  def first_resize_region(self) -> tuple[int, int] | None:
    """With resize_on_accelerator, from raw JPEG frames not stored at resize_hw: the shape of the
    frame regions that training clips travel in (transforms.first_resize_region of the largest
    first frame among REGION_SAMPLE training videos spread over the split), their first resize
    left to the train step as well. A clip of a larger video takes the CPU's first resize
    (decode_region). None otherwise, or when none of those videos can be read."""
    if not (
      self.resize_on_accelerator and self.train.encoded and isinstance(self.train, FileSplit)
    ):
      return None
    sizes, seen = set(), 0
    for i in np.unique(np.linspace(0, len(self.train) - 1, REGION_SAMPLE).round().astype(int)):
      try:
        jpegs, _ = self.train.read(int(i), lambda n: np.zeros(1, np.int64))
      except frame_io.UnreadableVideoError:
        continue
      sizes.add(tuple(int(s) for s in tf.io.extract_jpeg_shape(jpegs[0])[:2].numpy()))
      seen += 1
    if not sizes or sizes == {tuple(self.resize_hw)}:
      return None
    bounds = transforms.crop_bounds(self.train_crop, self.resize_hw)
    regions = [transforms.first_resize_region(size, self.resize_hw, bounds) for size in sizes]
    region = (max(r[0] for r in regions), max(r[1] for r in regions))
    logging.info(
      "raw frames: training clips travel as %d x %d regions of their frames (first frames of %s "
      "seen "
      "in %d videos), resized on the accelerator",
      *region,
      sorted(sizes),
      seen,
    )
    return region

  def train_iterator(
    self, start_step: int, global_batch: int, process_index: int = 0, process_count: int = 1
  ) -> Iterator[dict]:
    """This host's training batches from start_step on; 'clips' (n, T, S, S, 3) uint8 pixels
    (with resize_on_accelerator: windows (n, T, Hw, Ww, 3) that hold the crops, 'crop_boxes' (n, 4)
    the crops' (top, left, height, width) in them and 'flips' (n,) which clips to mirror; from raw
    JPEG frames, regions of the frames instead of windows, with 'first_resize' (n, 2, 3) that makes
    the windows of them: crop_resize.resize_regions)."""
    local = global_batch // process_count
    encoded = self.train.encoded
    region_hw = self.first_resize_region()

    def positions(step):
      first = step * global_batch + process_index * local
      return tf.data.Dataset.range(first, first + local)

    def load(position):
      frames, indices, label, video_id = tf.numpy_function(
        self.train_example,
        [position],
        (self._frames_type(self.train), tf.int32, tf.int32, tf.string),
        stateful=False,
      )
      seed = tf.stack([tf.constant(self.seed, tf.int64), position])
      options = dict(
        resize_hw=self.resize_hw,
        out_size=self.image_size,
        no_flip_labels=self.no_flip_labels,
        crop=self.train_crop,
        randaugment_ops=self.randaugment_ops,
        randaugment_magnitude=self.randaugment_magnitude,
        defer_resize=self.resize_on_accelerator,
      )
      if encoded:
        frames.set_shape([self.num_frames])
        clip = transforms.train_transform_jpeg(frames, label, seed, region_hw=region_hw, **options)
      else:
        frames.set_shape([self.num_frames, None, None, 3])
        clip = transforms.train_transform(frames, label, seed, **options)
      example = {"labels": tf.reshape(label, []), "frame_indices": indices, "ids": video_id}
      if region_hw is not None:
        clip, example["crop_boxes"], example["flips"], example["first_resize"] = clip
        clip.set_shape([self.num_frames, *region_hw, 3])
      elif self.resize_on_accelerator:
        clip, example["crop_boxes"], example["flips"] = clip
        clip.set_shape(
          [self.num_frames, *transforms.crop_bounds(self.train_crop, self.resize_hw), 3]
        )
      else:
        clip.set_shape([self.num_frames, self.image_size, self.image_size, 3])
      return {"clips": clip, **example}

    dataset = (
      tf.data.Dataset.range(start_step, np.iinfo(np.int64).max)
      .flat_map(positions)
      .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
      .batch(local, drop_remainder=True)
      .prefetch(2)
    )
    for batch in dataset.as_numpy_iterator():
      batch["ids"] = batch["ids"].astype(str)
      yield batch

  def eval_batches(
    self, global_batch: int, process_index: int = 0, process_count: int = 1
  ) -> Iterator[dict]:
    """Evaluation clips; 'mask' is 0 for the padding of the last batch. With several views,
    'clips' is (N, clips x crops, T, S, S, 3). An unreadable evaluation video stops the
    evaluation with its name."""
    local, total = global_batch // process_count, len(self.evaluation)
    views = self.eval_clips * self.eval_crops
    encoded = self.evaluation.encoded
    unreadable = []  # what a reader raised, to be raised here rather than as TensorFlow's error

    def read(position):
      try:
        return self.eval_example(self.evaluation, min(int(position), total - 1))
      except frame_io.UnreadableVideoError as e:
        unreadable.append(e)
        raise

    def example(position):
      frames, indices, label, video_id = tf.numpy_function(
        read,
        [position],
        (self._frames_type(self.evaluation), tf.int32, tf.int32, tf.string),
        stateful=False,
      )
      frames.set_shape([None] if encoded else [None, None, None, 3])
      clips = self.eval_views(frames, encoded)
      if views == 1:
        clips = clips[0]
      mask = tf.cast(position < total, tf.float32)
      return {
        "clips": clips,
        "labels": tf.reshape(label, []),
        "mask": mask,
        "ids": video_id,
        "frame_indices": indices,
      }

    padded = -(-total // global_batch) * global_batch
    starts = tf.data.Dataset.range(0, padded, global_batch)
    dataset = (
      starts.flat_map(
        lambda s: tf.data.Dataset.range(s + process_index * local, s + (process_index + 1) * local)
      )
      .map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
      .batch(local)
      .prefetch(2)
    )
    batches = dataset.as_numpy_iterator()
    while True:
      try:
        batch = next(batches)
      except StopIteration:
        return
      except tf.errors.OpError:
        if unreadable:
          raise frame_io.UnreadableVideoError(f"evaluation video {unreadable[0]}") from None
        raise
      batch["ids"] = batch["ids"].astype(str)
      yield batch
