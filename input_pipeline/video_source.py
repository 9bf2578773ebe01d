"""Training and evaluation batches from videos on disk (frame folders or video files).

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

from input_pipeline import frames as frame_io
from input_pipeline import sampling, transforms
from input_pipeline.labels import Video


@dataclasses.dataclass
class VideoSource:
  train_videos: Sequence[Video]
  eval_videos: Sequence[Video]
  class_names: Sequence[str]
  num_frames: int  # T, segments per clip
  image_size: int = 224  # crop side
  resize_hw: tuple[int, int] = (240, 320)  # every frame is resized to this first
  seed: int = 0
  frame_template: str = "{:05d}.jpg"  # frame file names, numbered from 1
  no_flip_labels: tuple[int, ...] = ()  # classes whose meaning a horizontal flip changes
  dense: bool = False  # TSM dense sampling instead of TSN segments
  eval_clips: int = 1  # evaluation views in time: clips per video
  eval_crops: int = 1  # evaluation views in space: 1 (centre) or 3 (along the longer side)

  def __post_init__(self):
    self._permutations: dict[int, np.ndarray] = {}
    if self.eval_crops not in (1, 3):
      raise ValueError(f"config.input.eval_crops = {self.eval_crops}: use 1 or 3")
    if self.eval_clips < 1 or (self.dense and self.eval_clips > 1):
      raise ValueError(f"config.input.eval_clips = {self.eval_clips}: use >= 1 (1 with dense sampling)")

  def read(self, video: Video, rng: np.random.Generator | None, num_clips: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """uint8 frames (num_clips * T, H, W, 3) and their 0-based indices; rng None samples for
    evaluation (num_clips evaluation clips, one after the other)."""
    if video.path.is_dir():
      files = frame_io.frame_files(video.path, self.frame_template)
      indices = self._indices(len(files), rng, num_clips)
      return frame_io.load_frames(files, indices), indices
    decoded = frame_io.decode_video(video.path, video.start_frame or 0, video.end_frame)
    indices = self._indices(len(decoded), rng, num_clips)
    return decoded[indices], indices + (video.start_frame or 0)

  def _indices(self, num_frames: int, rng, num_clips: int = 1) -> np.ndarray:
    if self.dense:
      return sampling.dense_indices(num_frames, self.num_frames, rng)
    if rng is None:
      return sampling.eval_indices(num_frames, self.num_frames, num_clips).reshape(-1)
    return sampling.train_indices(num_frames, self.num_frames, rng)

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch not in self._permutations:
      self._permutations = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.train_videos))}
    return self._permutations[epoch]

  def _train_example(self, position: int):
    count = len(self.train_videos)
    for attempt in range(count):  # a broken video is skipped for the next one, the same way each time
      epoch, slot = divmod(int(position) + attempt, count)
      video = self.train_videos[self._permutation(epoch)[slot]]
      try:
        clip, indices = self.read(video, np.random.default_rng([self.seed, int(position)]))
        return clip, indices.astype(np.int32), np.int32(video.label), video.video_id
      except frame_io.UnreadableVideoError as e:
        logging.warning("skipping %s", e)
    raise frame_io.UnreadableVideoError("no training video could be read")

  def train_iterator(self, start_step: int, global_batch: int, process_index: int = 0,
                     process_count: int = 1) -> Iterator[dict]:
    local = global_batch // process_count

    def positions(step):
      first = step * global_batch + process_index * local
      return tf.data.Dataset.range(first, first + local)

    def load(position):
      clip, indices, label, video_id = tf.numpy_function(
          self._train_example, [position], (tf.uint8, tf.int32, tf.int32, tf.string), stateful=False)
      clip.set_shape([self.num_frames, None, None, 3])
      seed = tf.stack([tf.constant(self.seed, tf.int64), position])
      clip = transforms.train_transform(clip, label, seed, resize_hw=self.resize_hw, out_size=self.image_size,
                                        no_flip_labels=self.no_flip_labels)
      return {"clips": clip, "labels": tf.reshape(label, []), "frame_indices": indices, "ids": video_id}

    dataset = (tf.data.Dataset.range(start_step, np.iinfo(np.int64).max).flat_map(positions)
               .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
               .batch(local, drop_remainder=True).prefetch(2))
    for batch in dataset.as_numpy_iterator():
      batch["ids"] = batch["ids"].astype(str)
      yield batch

  def eval_batches(self, global_batch: int, process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
    """Evaluation clips; 'mask' is 0 for the padding of the last batch. With several views,
    'clips' is (N, clips x crops, T, S, S, 3). An unreadable evaluation video stops the
    evaluation with its name."""
    local, total = global_batch // process_count, len(self.eval_videos)
    views = self.eval_clips * self.eval_crops

    def load(position):
      video = self.eval_videos[min(int(position), total - 1)]
      clip, indices = self.read(video, None, self.eval_clips)
      return clip, indices.astype(np.int32), np.int32(video.label), video.video_id

    def example(position):
      clip, indices, label, video_id = tf.numpy_function(
          load, [position], (tf.uint8, tf.int32, tf.int32, tf.string), stateful=False)
      clip.set_shape([None, None, None, 3])
      frames = transforms.eval_views(clip, self.eval_clips, self.eval_crops, resize_hw=self.resize_hw,
                                     out_size=self.image_size)
      if views == 1:
        frames = frames[0]
      mask = tf.cast(position < total, tf.float32)
      return {"clips": frames, "labels": tf.reshape(label, []), "mask": mask, "ids": video_id,
              "frame_indices": indices}

    padded = -(-total // global_batch) * global_batch
    starts = tf.data.Dataset.range(0, padded, global_batch)
    dataset = (starts.flat_map(lambda s: tf.data.Dataset.range(s + process_index * local, s + (process_index + 1) * local))
               .map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(local).prefetch(2))
    for batch in dataset.as_numpy_iterator():
      batch["ids"] = batch["ids"].astype(str)
      yield batch
