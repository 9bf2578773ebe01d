"""Per-host batches for training and evaluation, chosen by config.dataset.name.

Training batches are a pure function of the step: a resumed run sees exactly the batches it
would have seen. Each host gets its own contiguous slice of the global batch.
"""
from __future__ import annotations

import dataclasses
import itertools
import pathlib
from collections.abc import Iterator

import numpy as np

from input_pipeline import synthetic

VIDEO_DATASETS = ("list", "ssv1", "ssv2", "diving48", "finegym")
DATASETS = ("synthetic",) + VIDEO_DATASETS


@dataclasses.dataclass
class SyntheticSource:
  """The embedded synthetic-motion dataset (no files)."""

  dataset: synthetic.SyntheticMotion
  num_eval: int  # validation clips

  class_names = synthetic.CLASSES


  def _with_ids(self, batch: dict, indices) -> dict:
    """The clip's index in its split as its id; every frame of a synthetic clip is used."""
    batch["ids"] = np.array([str(int(i)) for i in indices])
    batch["frame_indices"] = np.tile(np.arange(self.dataset.num_frames, dtype=np.int32), (len(batch["ids"]), 1))
    return batch

  def train_iterator(self, start_step: int, global_batch: int, process_index: int = 0,
                     process_count: int = 1) -> Iterator[dict]:
    local = global_batch // process_count
    for step in itertools.count(start_step):
      indices = range(step * global_batch + process_index * local, step * global_batch + (process_index + 1) * local)
      yield self._with_ids(self.dataset.batch("train", indices), indices)

  def eval_batches(self, global_batch: int, process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
    """Batches of the validation split; 'mask' is 0 for padding that fills the last batch."""
    local = global_batch // process_count
    for start in range(0, self.num_eval, global_batch):
      indices = np.arange(start + process_index * local, start + (process_index + 1) * local)
      mask = (indices < self.num_eval).astype(np.float32)
      clamped = np.minimum(indices, self.num_eval - 1)
      batch = self._with_ids(self.dataset.batch("validation", clamped), clamped)
      batch["mask"] = mask
      yield batch


def build_source(config):
  """The data source of config.dataset, or an error naming the key and the allowed values."""
  name = config.dataset.name
  if name == "synthetic":
    if config.dataset.num_classes != len(synthetic.CLASSES):
      raise ValueError(
          f"config.dataset.num_classes = {config.dataset.num_classes}: the synthetic dataset has "
          f"{len(synthetic.CLASSES)} classes"
      )
    if config.dataset.num_eval < 1:
      raise ValueError(f"config.dataset.num_eval = {config.dataset.num_eval} must be >= 1")
    return SyntheticSource(
        synthetic.SyntheticMotion(config.input.num_frames, config.input.image_size, config.seed),
        config.dataset.num_eval,
    )
  if name in VIDEO_DATASETS:
    return _video_source(config)
  raise ValueError(f"config.dataset.name = {name!r} is unknown: use one of {DATASETS}")


def _video_source(config):
  """Videos read straight from the dataset's own layout (frame folders or video files)."""
  from input_pipeline import labels
  from input_pipeline.video_source import VideoSource

  dataset = config.dataset
  if not dataset.data_dir or not pathlib.Path(dataset.data_dir).is_dir():
    raise ValueError(f"config.dataset.data_dir = {dataset.data_dir!r} is not a directory: point it at the dataset")
  data_dir = pathlib.Path(dataset.data_dir)
  classes = dataset.num_classes
  names = None
  if dataset.name == "list":
    train = labels.read_list_file(data_dir / dataset.train_list, data_dir, classes, dataset.strip_prefix)
    evaluation = labels.read_list_file(data_dir / dataset.eval_list, data_dir, classes, dataset.strip_prefix)
    if dataset.class_names:
      names = labels.read_class_names(data_dir / dataset.class_names)
  elif dataset.name == "ssv1":
    train, names = labels.read_ssv1(data_dir, "train")
    evaluation, _ = labels.read_ssv1(data_dir, "validation")
  elif dataset.name == "ssv2":
    train, names = labels.read_ssv2(data_dir, "train")
    evaluation, _ = labels.read_ssv2(data_dir, "validation")
  elif dataset.name == "diving48":
    train, evaluation = labels.read_diving48(data_dir, "train", classes), labels.read_diving48(data_dir, "test", classes)
  else:  # finegym
    train = labels.read_finegym(data_dir / dataset.train_list, data_dir, classes)
    evaluation = labels.read_finegym(data_dir / dataset.eval_list, data_dir, classes)
  if names is not None and len(names) != classes:
    raise ValueError(f"config.dataset.num_classes = {classes}, but the label files of {data_dir} name {len(names)} classes")
  return VideoSource(
      train, evaluation, names or [str(i) for i in range(classes)], config.input.num_frames,
      image_size=config.input.image_size, resize_hw=tuple(config.input.resize_hw), seed=config.seed,
      frame_template=dataset.frame_template, no_flip_labels=tuple(dataset.no_flip_labels),
      dense=config.input.dense_sampling, eval_clips=config.input.eval_clips, eval_crops=config.input.eval_crops,
  )
