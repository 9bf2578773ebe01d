"""The training and evaluation loop: one program for one CPU, many GPUs and TPU pods."""
from __future__ import annotations

import math
import os
import pathlib
import sys
import time
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx
from tqdm import tqdm

import input_pipeline.sources
from stss_jax import evaluation, model_dir
from stss_jax.files import write_json_atomically
from stss_jax.models import build_model
from stss_jax.train import checkpoints, optimizer, reporting, sharding, steps
from stss_jax.train.state import create_train_state


MODEL_INPUTS = ("clips", "labels")  # what goes to the devices; ids and frame indices stay on the host


class NonFiniteLossError(RuntimeError):
  """The loss became NaN or Inf; the last checkpoint holds the last good state."""


def validate_config(config) -> None:
  """Checks the loop's own keys before any work, naming the key and what is allowed."""
  for key in ("batch_size", "total_steps", "eval_every_steps", "checkpoint_every_steps", "log_every_steps",
              "keep_checkpoints"):
    value = config[key]
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"config.{key} = {value!r} must be a positive integer")
  if not 0.0 <= config.label_smoothing < 1.0:
    raise ValueError(f"config.label_smoothing = {config.label_smoothing!r} must be in [0, 1)")


def prepare_workdir(workdir: str) -> pathlib.Path:
  path = pathlib.Path(workdir).absolute()
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".write_probe.{os.getpid()}"  # one per process: hosts may share the workdir
    probe.write_text("")
    probe.unlink()
  except OSError as e:
    raise ValueError(f"--workdir {path} is not writable: {e.strerror or e}") from e
  return path


class Trainer:
  """Builds the model, optimiser, mesh, data and compiled steps of one config.

  devices: the devices of the data-parallel mesh; every device of every host by default.
  """

  def __init__(self, config, workdir: str, devices: Sequence[jax.Device] | None = None):
    validate_config(config)
    self.config = config
    self.workdir = prepare_workdir(workdir)
    self.mesh = sharding.make_mesh(devices)
    self.local_batch = sharding.check_batch_size(config.batch_size, self.mesh)
    self.source = input_pipeline.sources.build_source(config)
    self.tx = optimizer.build_optimizer(config)
    self.schedule = optimizer.learning_rate_schedule(config)
    model = build_model(config, nnx.Rngs(config.seed))
    if config.init_from:
      model_dir.restore(config.init_from, model, config)
      _say(f"initialised from {config.init_from}")
    state, self.graphs = create_train_state(model, self.tx)
    self.replicated = sharding.replicated(self.mesh)
    self.state = jax.device_put(state, self.replicated)
    self.rng = jax.random.key(config.seed)
    batch = sharding.batch_sharding(self.mesh)
    self.train_step = jax.jit(
        steps.make_train_step(self.graphs, self.tx, self.schedule, config.label_smoothing),
        in_shardings=(self.replicated, batch, self.replicated),
        out_shardings=(self.replicated, self.replicated),
        donate_argnums=0,
    )
    self.eval_step = jax.jit(
        steps.make_eval_step(self.graphs), in_shardings=(self.replicated, batch), out_shardings=self.replicated
    )
    self.checkpoints = checkpoints.TrainCheckpoints(self.workdir, config, config.keep_checkpoints)
    self.writer = reporting.MetricsWriter(self.workdir, enabled=jax.process_index() == 0)

  def resume(self) -> int:
    step = self.checkpoints.latest_step()
    if step is not None:
      self.state = self.checkpoints.restore(self.state, step)
      _say(f"resumed from step {step} of {self.checkpoints.directory}")
    return int(self.state.step)

  def evaluate(self, split: str = "validation") -> dict:
    batches = self.source.eval_batches(self.config.batch_size, jax.process_index(), jax.process_count())
    probabilities, labels = evaluation.split_probabilities(batches, self.logits)
    report = evaluation.classification_report(probabilities, labels, self.config.dataset.num_classes)
    step = int(self.state.step)
    self.writer.write(step, split, {k: report[k] for k in ("loss", "top1", "top5")})
    if jax.process_index() == 0:
      write_json_atomically(self.workdir / f"eval_{split}_step{step}.json", {
          "step": step,
          "class_names": list(getattr(self.source, "class_names", [])),
          "per_class_top1": [None if math.isnan(v) else v for v in report["per_class_top1"].tolist()],
          "confusion": report["confusion"].tolist(),
      })
    return report

  def logits(self, batch: dict) -> np.ndarray:
    """Eval-mode logits of the global batch whose host-local part is {'clips', 'labels'}."""
    return np.asarray(self.eval_step(self.state, sharding.global_batch(batch, self.mesh)))

  def train(self) -> dict:
    config = self.config
    start = self.resume()
    if start >= config.total_steps:
      _say(f"already trained for {start} steps (config.total_steps = {config.total_steps})")
    bar = tqdm(total=config.total_steps, initial=start, unit="step", dynamic_ncols=True,
               disable=jax.process_index() != 0)
    last_eval, tick, tick_step = None, time.perf_counter(), start
    batches = self.source.train_iterator(start, config.batch_size, jax.process_index(), jax.process_count())
    for step in range(start, config.total_steps):
      local = {k: v for k, v in next(batches).items() if k in MODEL_INPUTS}
      self.state, metrics = self.train_step(self.state, sharding.global_batch(local, self.mesh), self.rng)
      done = step + 1
      bar.update(1)
      is_last = done == config.total_steps
      if done % config.log_every_steps == 0 or done % config.checkpoint_every_steps == 0 or is_last:
        metrics = jax.device_get(metrics)
        if not (np.isfinite(metrics["loss"]) and metrics["params_finite"]):
          self.checkpoints.close()
          what = f"loss is {metrics['loss']}" if not np.isfinite(metrics["loss"]) else "parameters overflowed"
          raise NonFiniteLossError(
              f"{what} at step {done}; stopping. The last checkpoint in "
              f"{self.checkpoints.directory} (step {self.checkpoints.latest_step()}) is intact"
          )
        now = time.perf_counter()
        clips_per_s = (done - tick_step) * config.batch_size / max(now - tick, 1e-9)
        tick, tick_step = now, done
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", lr=f"{metrics['lr']:.2e}", clips_s=f"{clips_per_s:.1f}")
        self.writer.write(done, "train", {**metrics, "clips_per_second": clips_per_s})
      if done % config.eval_every_steps == 0 or is_last:
        last_eval = self.evaluate()
        _say(f"step {done}: validation loss {last_eval['loss']:.4f} top-1 {last_eval['top1']:.2%} "
                  f"top-5 {last_eval['top5']:.2%}")
      if done % config.checkpoint_every_steps == 0 or is_last:
        evaluated = done % config.eval_every_steps == 0 or is_last  # evaluated just above
        self.checkpoints.save(done, self.state, {"top1": float(last_eval["top1"])} if evaluated else None)
    bar.close()
    self.checkpoints.close()
    self.export_model()
    return last_eval if last_eval is not None else self.evaluate()

  def export_model(self) -> None:
    """Writes the final model to WORKDIR/model, the directory predict and visualize read."""
    if jax.process_count() > 1:
      _say("multi-host run: no WORKDIR/model export; evaluate with --mode=eval")
      return
    model = nnx.merge(self.graphs.eval, self.state.params, self.state.batch_stats)
    model_dir.replace(self.workdir / "model", model, self.config)


def _say(message: str) -> None:
  """A line for the person running the job (process 0 only), beside the progress bar."""
  if jax.process_index() == 0:
    tqdm.write(message, file=sys.stderr)


def train_and_evaluate(config, workdir: str, devices: Sequence[jax.Device] | None = None) -> dict:
  return Trainer(config, workdir, devices).train()


def evaluate_only(config, workdir: str, devices: Sequence[jax.Device] | None = None) -> dict:
  """Evaluates the workdir's latest checkpoint, or config.init_from when the workdir has none."""
  trainer = Trainer(config, workdir, devices)
  if trainer.checkpoints.latest_step() is None and not config.init_from:
    raise ValueError(f"nothing to evaluate: {trainer.checkpoints.directory} is empty and config.init_from is unset")
  trainer.resume()
  report = trainer.evaluate()
  trainer.checkpoints.close()
  return report
