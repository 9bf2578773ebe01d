"""Per-host batches for training and evaluation, chosen by config.dataset.name.

Training batches are a pure function of the step: a resumed run sees exactly the batches it
would have seen. Each host gets its own contiguous slice of the global batch.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from input_pipeline import synthetic

VIDEO_DATASETS = ("ssv1", "ssv2", "diving48", "finegym")
DATASETS = ("synthetic",) + VIDEO_DATASETS


@dataclasses.dataclass
class SyntheticSource:
  """The embedded synthetic-motion dataset (no files)."""

  dataset: synthetic.SyntheticMotion
  num_eval: int  # validation clips

  class_names = synthetic.CLASSES

  def train_batch(self, step: int, global_batch: int, process_index: int = 0, process_count: int = 1) -> dict:
    local = global_batch // process_count
    first = step * global_batch + process_index * local
    return self.dataset.batch("train", range(first, first + local))

  def eval_batches(self, global_batch: int, process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
    """Batches of the validation split; 'mask' is 0 for padding that fills the last batch."""
    local = global_batch // process_count
    for start in range(0, self.num_eval, global_batch):
      indices = np.arange(start + process_index * local, start + (process_index + 1) * local)
      mask = (indices < self.num_eval).astype(np.float32)
      batch = self.dataset.batch("validation", np.minimum(indices, self.num_eval - 1))
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
    raise ValueError(
        f"config.dataset.name = {name!r}: the video input pipeline is not built yet (issue 4); "
        "train on dataset.name='synthetic' or use stss_jax.predict on clip arrays"
    )
  raise ValueError(f"config.dataset.name = {name!r} is unknown: use one of {DATASETS}")
