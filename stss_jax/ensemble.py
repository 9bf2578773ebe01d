"""Evaluates two models and their ensemble (softmax averaged), as the paper's 8 + 16-frame result.

  python -m stss_jax.ensemble --config=configs/ssv1.py --checkpoint=runs/ssv1/model \\
      --second_config=configs/ssv1.py:16 --second_checkpoint=runs/ssv1_16f/model \\
      --config.dataset.data_dir=DATA --second_config.dataset.data_dir=DATA

Each model sees its own input settings (frames, views) of the same evaluation videos; the
labels of the two passes must agree. Multi-view settings (input.eval_clips, input.eval_crops)
apply per model.
"""
from __future__ import annotations

import sys

import jax
import numpy as np
import optax
from absl import app, flags
from ml_collections import config_flags

import input_pipeline.sources
from stss_jax.models import build_model
from stss_jax.train import reporting, sharding, steps
from stss_jax.train.checkpoints import restore_model
from stss_jax.train.loop import evaluation_probabilities
from stss_jax.train.state import create_train_state


def model_probabilities(config, checkpoint: str) -> tuple[np.ndarray, np.ndarray]:
  """(videos, classes) evaluation probabilities of one model checkpoint, and the labels."""
  model = build_model(config)
  restore_model(checkpoint, model, config)
  state, graphs = create_train_state(model, optax.identity())
  mesh = sharding.make_mesh(config.mesh.model)
  sharding.check_batch_size(config.batch_size, mesh)
  replicated = sharding.replicated(mesh)
  eval_step = jax.jit(steps.make_eval_step(graphs), in_shardings=(replicated, sharding.batch_sharding(mesh)),
                      out_shardings=replicated)
  source = input_pipeline.sources.build_source(config)
  return evaluation_probabilities(eval_step, jax.device_put(state, replicated), source, config.batch_size, mesh)


def ensemble(members: list[tuple[object, str]]) -> dict:
  """Reports of every member and of their averaged softmax."""
  results, reports = [], {}
  for index, (config, checkpoint) in enumerate(members):
    probabilities, labels = model_probabilities(config, checkpoint)
    if results and not np.array_equal(labels, results[0][1]):
      raise ValueError(f"model {index + 1} was evaluated on other videos (labels differ): use the same dataset")
    results.append((probabilities, labels))
    reports[f"model {index + 1} ({checkpoint})"] = reporting.classification_report(
        np.log(probabilities), labels, probabilities.shape[1])
  mean = np.mean([p for p, _ in results], axis=0)
  reports["ensemble"] = reporting.classification_report(np.log(mean), results[0][1], mean.shape[1])
  return reports


def main(argv):
  del argv
  FLAGS = flags.FLAGS
  if FLAGS.config is None or FLAGS.second_config is None or not FLAGS.checkpoint or not FLAGS.second_checkpoint:
    raise app.UsageError("--config, --checkpoint, --second_config and --second_checkpoint are required")
  try:
    reports = ensemble([(FLAGS.config, FLAGS.checkpoint), (FLAGS.second_config, FLAGS.second_checkpoint)])
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  for name, report in reports.items():
    print(f"{name}: top-1 {report['top1']:.2%}  top-5 {report['top5']:.2%}  loss {report['loss']:.4f}")
  return 0


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "First model's config.", lock_config=True)
  config_flags.DEFINE_config_file("second_config", None, "Second model's config.", lock_config=True)
  flags.DEFINE_string("checkpoint", None, "First model's checkpoint directory.")
  flags.DEFINE_string("second_checkpoint", None, "Second model's checkpoint directory.")
  app.run(main)
