"""Where metrics go: DIR/metrics.jsonl (one JSON object per line) and TensorBoard."""
from __future__ import annotations

import json
import pathlib

import numpy as np
from absl import logging

from stss_jax.files import write_text_atomically


class MetricsWriter:
  """Appends metrics to metrics.jsonl and TensorBoard; only process 0 writes."""

  def __init__(self, workdir: pathlib.Path, enabled: bool = True):
    self.enabled = enabled
    self.path = workdir / "metrics.jsonl"
    self.summary_writer = None
    if enabled:
      try:
        import tensorflow as tf  # the CPU build is enough; absent on some accelerator images

        tf.config.set_visible_devices([], "GPU")
        self.summary_writer = tf.summary.create_file_writer(str(workdir / "tensorboard"))
        self._tf = tf
      except ImportError:
        logging.warning("tensorflow is not installed: no TensorBoard summaries, metrics.jsonl only")

  def keep_rows(self, keep) -> None:
    """Rewrites metrics.jsonl (atomically) with only the rows for which keep(row) is true."""
    if not self.enabled or not self.path.is_file():
      return
    rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
    kept = [row for row in rows if keep(row)]
    if len(kept) != len(rows):
      write_text_atomically(self.path, "".join(json.dumps(row) + "\n" for row in kept))

  def write(self, step: int, split: str, metrics: dict, labels: dict | None = None) -> None:
    """One row {step, split, **labels, **metrics}; `labels` (e.g. a corruption and its severity)
    say what was measured and also name the TensorBoard group, split_label1_label2."""
    if not self.enabled:
      return
    record = {"step": int(step), "split": split, **(labels or {}), **{k: _plain(v) for k, v in metrics.items()}}
    with self.path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    if self.summary_writer is not None:
      group = "_".join([split, *map(str, (labels or {}).values())])
      with self.summary_writer.as_default(step=int(step)):
        for key, value in metrics.items():
          if np.ndim(value) == 0:
            self._tf.summary.scalar(f"{group}/{key}", float(value))
      self.summary_writer.flush()


def _plain(value):
  return float(value) if np.ndim(value) == 0 else np.asarray(value).tolist()
