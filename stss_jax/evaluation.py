"""Evaluation: class probabilities of a split's views, averaged per video, and their metrics.

Used by the trainer, predict and ensemble alike. With multi-view testing each video's
probability is the softmax averaged over its views (clips x crops), as the paper reports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from jax.experimental import multihost_utils

MIN_PROBABILITY = 1e-30  # floor of the probabilities whose log is the loss


def softmax(logits: np.ndarray) -> np.ndarray:
  """(..., C) logits -> float64 probabilities."""
  logits = np.asarray(logits, np.float64)
  exponentials = np.exp(logits - logits.max(-1, keepdims=True))
  return exponentials / exponentials.sum(-1, keepdims=True)


def view_probabilities(logits: np.ndarray, views: int) -> np.ndarray:
  """(N * views, C) logits, video-major -> (N, C): each video's softmax averaged over its views."""
  probabilities = softmax(logits)
  return probabilities.reshape(-1, views, probabilities.shape[-1]).mean(1)


def split_probabilities(
  batches: Iterable[dict], logits_of: Callable[[dict], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
  """Probabilities (videos, classes) and labels (videos,) of a whole evaluation split.

  batches: this host's batches, {'clips': (n, T, H, W, 3) or (n, views, T, H, W, 3), 'labels':
    (n,), 'mask': (n,) 0 for the padding of the last batch}.
  logits_of: {'clips': (n * views, T, H, W, 3), 'labels': (n,)} -> global logits
    (hosts * n * views, classes), e.g. a jitted eval step over the mesh.
  """
  probabilities, labels = [], []
  for batch in batches:
    clips = batch["clips"]
    views = clips.shape[1] if clips.ndim == 6 else 1
    logits = logits_of({"clips": clips.reshape(-1, *clips.shape[-4:]), "labels": batch["labels"]})
    keep = _all_hosts(batch["mask"]) > 0
    probabilities.append(view_probabilities(np.asarray(logits), views)[keep])
    labels.append(_all_hosts(batch["labels"])[keep])
  return np.concatenate(probabilities), np.concatenate(labels)


def _all_hosts(local: np.ndarray) -> np.ndarray:
  """The concatenation of every host's `local` array (the array itself on one host)."""
  return np.asarray(multihost_utils.process_allgather(local, tiled=True))


# The scalars of a report that go to metrics.jsonl, the checkpoints' records and the final line.
SCALARS = ("loss", "top1", "top5", "mean_class_accuracy")


def classification_report(probabilities: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
  """Loss (mean negative log-probability of the label), top-1, top-5, per-class top-1 (NaN for
  classes without a video), their mean over the classes that have videos (mean class accuracy,
  FineGym's metric, a fraction as top-1 is) and the confusion matrix (true class x predicted
  class) of (N, C) class probabilities."""
  probabilities = np.asarray(probabilities, np.float64)
  loss = -np.log(np.maximum(probabilities[np.arange(len(labels)), labels], MIN_PROBABILITY)).mean()
  ranked = np.argsort(-probabilities, axis=-1, kind="stable")
  top1 = (ranked[:, 0] == labels).mean()
  top5 = (ranked[:, :5] == labels[:, None]).any(-1).mean()
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (labels, ranked[:, 0]), 1)
  counts = confusion.sum(1)
  per_class = np.where(counts > 0, np.diag(confusion) / np.maximum(counts, 1), np.nan)
  return {
    "loss": loss,
    "top1": top1,
    "top5": top5,
    "mean_class_accuracy": np.nanmean(per_class),
    "per_class_top1": per_class,
    "confusion": confusion,
  }
