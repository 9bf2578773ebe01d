"""The classification report against loops written out by hand."""

import math

import numpy as np

from stss_jax import evaluation


def reference(probabilities, labels, num_classes):
  loss = top1 = top5 = 0.0
  right, seen = [0] * num_classes, [0] * num_classes
  for p, label in zip(probabilities.tolist(), labels.tolist()):
    loss -= math.log(p[label])
    order = sorted(range(num_classes), key=lambda c: (-p[c], c))
    top1 += order[0] == label
    top5 += label in order[:5]
    seen[label] += 1
    right[label] += order[0] == label
  per_class = [r / s for r, s in zip(right, seen) if s]
  n = len(labels)
  return {
    "loss": loss / n,
    "top1": top1 / n,
    "top5": top5 / n,
    "mean_class_accuracy": sum(per_class) / len(per_class),
  }


def test_report_matches_the_loops_on_unbalanced_classes():
  rng = np.random.default_rng(0)
  num_classes = 12
  labels = np.concatenate(
    [np.zeros(40, int), rng.integers(1, 9, 60)]
  )  # class 0 dominates; 9..11 absent
  logits = rng.normal(size=(100, num_classes))
  logits[np.arange(100), labels] += rng.uniform(0, 2.5, 100)
  probabilities = evaluation.softmax(logits)
  report = evaluation.classification_report(probabilities, labels, num_classes)
  expected = reference(probabilities, labels, num_classes)
  for key in evaluation.SCALARS:
    assert math.isclose(report[key], expected[key], rel_tol=1e-12), key
  assert not math.isclose(
    report["mean_class_accuracy"], report["top1"], rel_tol=1e-3
  )  # the two differ here
  assert np.isnan(report["per_class_top1"][9:]).all()
  assert report["confusion"].sum() == 100 and report["confusion"][0].sum() == 40
