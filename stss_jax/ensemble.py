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
from absl import flags

import input_pipeline.sources
from stss_jax import cli, evaluation, model_dir
from stss_jax.models import build_model
from stss_jax.train import sharding, steps
from stss_jax.train.state import create_train_state


def model_probabilities(config, checkpoint: str) -> tuple[np.ndarray, np.ndarray]:
  """(videos, classes) evaluation probabilities of one model directory, and the labels."""
  model = build_model(config)
  model_dir.restore_for_inference(checkpoint, model, config)
  state, graphs = create_train_state(model, optax.identity())
  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  replicated = sharding.replicated(mesh)
  eval_step = jax.jit(
    steps.make_eval_step(graphs),
    in_shardings=(replicated, sharding.batch_sharding(mesh)),
    out_shardings=replicated,
  )
  state = jax.device_put(state, replicated)
  source = input_pipeline.sources.build_source(config)
  batches = source.eval_batches(config.batch_size, jax.process_index(), jax.process_count())
  return evaluation.split_probabilities(
    batches, lambda batch: np.asarray(eval_step(state, sharding.global_batch(batch, mesh)))
  )


def ensemble(members: list[tuple[object, str]]) -> dict:
  """Reports of every member and of their averaged softmax."""
  results, reports = [], {}
  for index, (config, checkpoint) in enumerate(members):
    probabilities, labels = model_probabilities(config, checkpoint)
    if results and not np.array_equal(labels, results[0][1]):
      raise ValueError(
        f"model {index + 1} was evaluated on other videos (labels differ): use the same dataset"
      )
    results.append((probabilities, labels))
    reports[f"model {index + 1} ({checkpoint})"] = evaluation.classification_report(
      probabilities, labels, probabilities.shape[1]
    )
  mean = np.mean([p for p, _ in results], axis=0)
  reports["ensemble"] = evaluation.classification_report(mean, results[0][1], mean.shape[1])
  return reports


def define_flags(flag_values: flags.FlagValues, argv) -> None:
  cli.define_config(flag_values, argv, help_string="First model's config.")
  cli.define_config(flag_values, argv, "second_config", "Second model's config.")
  flags.DEFINE_string("checkpoint", None, "First model's directory.", flag_values=flag_values)
  flags.DEFINE_string(
    "second_checkpoint", None, "Second model's directory.", flag_values=flag_values
  )
  flags.mark_flags_as_required(["checkpoint", "second_checkpoint"], flag_values=flag_values)


def run(flag_values: flags.FlagValues) -> int:
  reports = ensemble(
    [
      (flag_values.config, flag_values.checkpoint),
      (flag_values.second_config, flag_values.second_checkpoint),
    ]
  )
  for name, report in reports.items():
    print(
      f"{name}: top-1 {report['top1']:.2%}  top-5 {report['top5']:.2%}  loss {report['loss']:.4f}  "
      f"mean class accuracy {report['mean_class_accuracy']:.2%}"
    )
  return 0


def main(argv=None) -> int:
  return cli.main(
    __doc__,
    define_flags,
    run,
    argv,
    model_configs={"config": "checkpoint", "second_config": "second_checkpoint"},
  )


if __name__ == "__main__":
  sys.exit(main())
