"""Per-host batches for training and evaluation, chosen by config.dataset.name.

Training batches are a pure function of the step: a resumed run sees exactly the batches it
would have seen. Each host gets its own contiguous slice of the global batch. 'clips' are uint8
RGB pixels from the video sources and normalised float32 from the synthetic one
(normalization.model_input makes either what the model takes).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator

import numpy as np
from absl import logging

from input_pipeline import synthetic
from input_pipeline.labels import data_path

VIDEO_DATASETS = ("list", "ssv1", "ssv2", "diving48", "finegym")
DATASETS = ("synthetic",) + VIDEO_DATASETS


@dataclasses.dataclass
class SyntheticSource:
  """The embedded synthetic-motion dataset (no files)."""

  dataset: synthetic.SyntheticMotion
  num_eval: int  # validation clips

  @property
  def class_names(self) -> tuple[str, ...]:
    return self.dataset.class_names

  def _with_ids(self, batch: dict, indices) -> dict:
    """The clip's index in its split as its id; every frame of a synthetic clip is used."""
    batch["ids"] = np.array([str(int(i)) for i in indices])
    batch["frame_indices"] = np.tile(
      np.arange(self.dataset.num_frames, dtype=np.int32), (len(batch["ids"]), 1)
    )
    return batch

  def train_iterator(
    self, start_step: int, global_batch: int, process_index: int = 0, process_count: int = 1
  ) -> Iterator[dict]:
    local = global_batch // process_count
    for step in itertools.count(start_step):
      indices = range(
        step * global_batch + process_index * local,
        step * global_batch + (process_index + 1) * local,
      )
      yield self._with_ids(self.dataset.batch("train", indices), indices)

  def eval_batches(
    self, global_batch: int, process_index: int = 0, process_count: int = 1
  ) -> Iterator[dict]:
    """Batches of the validation split; 'mask' is 0 for padding that fills the last batch."""
    local = global_batch // process_count
    for start in range(0, self.num_eval, global_batch):
      indices = np.arange(start + process_index * local, start + (process_index + 1) * local)
      mask = (indices < self.num_eval).astype(np.float32)
      clamped = np.minimum(indices, self.num_eval - 1)
      batch = self._with_ids(self.dataset.batch("validation", clamped), clamped)
      batch["mask"] = mask
      yield batch


def check_input(config) -> None:
  """Checks config.input's sizes and counts, naming the key and what is allowed: each is a size
  or a divisor somewhere in the pipeline."""
  clip = config.input
  positive = {
    "input.num_frames": clip.num_frames,
    "input.image_size": clip.image_size,
    "input.eval_clips": clip.eval_clips,
  }
  for key, value in positive.items():
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"config.{key} = {value!r} must be a positive integer")
  resize = tuple(clip.resize_hw)
  if len(resize) != 2 or not all(isinstance(v, int) and v >= 1 for v in resize):
    raise ValueError(
      f"config.input.resize_hw = {resize!r} must be two positive integers (height, width)"
    )
  if clip.eval_crops not in (1, 3):
    raise ValueError(f"config.input.eval_crops = {clip.eval_crops!r}: use 1 or 3")
  if not isinstance(clip.randaugment_ops, int) or clip.randaugment_ops < 0:
    raise ValueError(
      f"config.input.randaugment_ops = {clip.randaugment_ops!r} must be an integer >= 0"
    )
  if not 0 <= clip.randaugment_magnitude <= 10:
    raise ValueError(
      f"config.input.randaugment_magnitude = {clip.randaugment_magnitude!r} must be in [0, 10]"
    )


def build_source(config):
  """The data source of config.dataset, or an error naming the key and the allowed values."""
  check_input(config)
  name = config.dataset.name
  if name == "synthetic":
    motions = synthetic.SyntheticMotion(
      config.input.num_frames,
      config.input.image_size,
      config.seed,
      config.dataset.motion_scale,
      tuple(config.dataset.classes),
    )
    if config.dataset.num_classes != len(motions.classes):
      raise ValueError(
        f"config.dataset.num_classes = {config.dataset.num_classes}: config.dataset.classes "
        "selects "
        f"{len(motions.classes)} synthetic motions"
      )
    if config.dataset.num_eval < 1:
      raise ValueError(f"config.dataset.num_eval = {config.dataset.num_eval} must be >= 1")
    return SyntheticSource(motions, config.dataset.num_eval)
  if name in VIDEO_DATASETS:
    return _video_source(config)
  raise ValueError(f"config.dataset.name = {name!r} is unknown: use one of {DATASETS}")


def _video_source(config):
  """Videos read from a TFDS build (input_pipeline.prepare) or straight from the dataset's own
  layout (frame folders or video files)."""
  from input_pipeline import tfds_source
  from input_pipeline.video_source import FileSplit, VideoSource

  dataset = config.dataset
  build = tfds_source.find(dataset.data_dir, dataset.name, dataset.tfds_name)
  if build is not None:
    logging.info("reading the TFDS build %s", build)
    train, evaluation = (tfds_source.TfdsSplit(build, split) for split in ("train", "validation"))
    names = train.class_names
    data_dir = build
  else:
    data_dir = data_path(dataset.data_dir)
    if not data_dir.is_dir():
      raise ValueError(
        f"config.dataset.data_dir = {dataset.data_dir!r} is not a directory: point it at a TFDS "
        f"data dir holding {dataset.name} ({tfds_source.build_command(dataset.name, 'DIR')}) or "
        f"at {dataset.name} in its official layout (docs/datasets.md), e.g. "
        f"--config.dataset.data_dir=/data/{dataset.name}"
      )
    train_videos, evaluation_videos, names = _label_files(config, data_dir)
    train, evaluation = (
      FileSplit(videos, dataset.frame_template) for videos in (train_videos, evaluation_videos)
    )
  classes = dataset.num_classes
  if names is not None and len(names) != classes:
    raise ValueError(
      f"config.dataset.num_classes = {classes}, but the label files of {data_dir} name "
      f"{len(names)} classes"
    )
  if names and dataset.no_flip_labels:
    if max(dataset.no_flip_labels) >= len(names) or min(dataset.no_flip_labels) < 0:
      raise ValueError(
        f"config.dataset.no_flip_labels = {tuple(dataset.no_flip_labels)}: ids must be in "
        f"0..{len(names) - 1}"
      )
    logging.info(
      "never flipped in training: %s", "; ".join(names[i] for i in dataset.no_flip_labels)
    )
  return VideoSource(
    train,
    evaluation,
    names or [str(i) for i in range(classes)],
    config.input.num_frames,
    image_size=config.input.image_size,
    resize_hw=tuple(config.input.resize_hw),
    seed=config.seed,
    no_flip_labels=tuple(dataset.no_flip_labels),
    dense=config.input.dense_sampling,
    eval_clips=config.input.eval_clips,
    eval_crops=config.input.eval_crops,
    train_crop=config.input.train_crop,
    randaugment_ops=config.input.randaugment_ops,
    randaugment_magnitude=config.input.randaugment_magnitude,
    resize_on_accelerator=config.input.resize_on_accelerator,
  )


def _label_files(config, data_dir):
  dataset = config.dataset
  from input_pipeline.labels import read_label_files

  return read_label_files(
    dataset.name,
    data_dir,
    dataset.num_classes,
    dataset.train_list,
    dataset.eval_list,
    dataset.class_names,
    dataset.strip_prefix,
  )
