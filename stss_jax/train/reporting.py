"""Where metrics go: DIR/metrics.jsonl (one JSON object per line), TensorBoard, eval reports."""
from __future__ import annotations

import json
import pathlib

import numpy as np
from absl import logging


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

  def write(self, step: int, split: str, metrics: dict) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), "split": split, **{k: _plain(v) for k, v in metrics.items()}}
    with self.path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    if self.summary_writer is not None:
      with self.summary_writer.as_default(step=int(step)):
        for key, value in metrics.items():
          if np.ndim(value) == 0:
            self._tf.summary.scalar(f"{split}/{key}", float(value))
      self.summary_writer.flush()


def _plain(value):
  return float(value) if np.ndim(value) == 0 else np.asarray(value).tolist()


def classification_report(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
  """Loss, top-1, top-5, per-class accuracy and the confusion matrix of (N, C) logits."""
  logits = logits.astype(np.float64)
  log_probs = logits - logits.max(-1, keepdims=True)
  log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
  loss = -log_probs[np.arange(len(labels)), labels].mean()
  ranked = np.argsort(-logits, axis=-1)
  top1 = (ranked[:, 0] == labels).mean()
  top5 = (ranked[:, :5] == labels[:, None]).any(-1).mean()
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (labels, ranked[:, 0]), 1)
  counts = confusion.sum(1)
  per_class = np.where(counts > 0, np.diag(confusion) / np.maximum(counts, 1), np.nan)
  return {"loss": loss, "top1": top1, "top5": top5, "per_class_top1": per_class, "confusion": confusion}
