"""The training and evaluation loop: one program for one CPU, many GPUs and TPU pods."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from tqdm import tqdm

import input_pipeline.sources
from input_pipeline import corruptions
from input_pipeline.crop_sizes import crop_bounds
from stss_jax import evaluation, model_card, model_dir
from stss_jax.files import write_json_atomically
from stss_jax.models import build_model
from stss_jax.train import (
  checkpoints,
  optimizer,
  preemption,
  reporting,
  sharding,
  steps,
)
from stss_jax.train import (
  workdir as workdir_lib,
)
from stss_jax.train.state import create_train_state

# What goes to the devices (crop_boxes, flips and first_resize only with resize_on_accelerator);
# ids and frame
# indices stay on the host.
MODEL_INPUTS = ("clips", "labels", "crop_boxes", "flips", "first_resize")


class NonFiniteLossError(RuntimeError):
  """The loss became NaN or Inf; the last checkpoint holds the last good state."""


class EvaluationError(ValueError):
  """An evaluation failed on its data; the checkpoint it evaluated is saved and complete."""


def validate_config(config) -> None:
  """Checks the loop's own keys before any work, naming the key and what is allowed."""
  for key in (
    "batch_size",
    "total_steps",
    "eval_every_steps",
    "checkpoint_every_steps",
    "log_every_steps",
    "keep_checkpoints",
    "grad_accum_steps",
  ):
    value = config[key]
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"config.{key} = {value!r} must be a positive integer")
  if (
    not isinstance(config.checkpoint_every_minutes, (int, float))
    or config.checkpoint_every_minutes < 0
  ):
    raise ValueError(
      f"config.checkpoint_every_minutes = {config.checkpoint_every_minutes!r} must be >= 0 (0: off)"
    )
  optimizer = config.optimizer
  if not isinstance(optimizer.base_batch_size, int) or optimizer.base_batch_size < 1:
    raise ValueError(
      f"config.optimizer.base_batch_size = {optimizer.base_batch_size!r} must be a positive integer"
    )
  if not isinstance(optimizer.warmup_steps, int) or optimizer.warmup_steps < 0:
    raise ValueError(
      f"config.optimizer.warmup_steps = {optimizer.warmup_steps!r} must be an integer >= 0"
    )
  if not optimizer.learning_rate > 0:
    raise ValueError(f"config.optimizer.learning_rate = {optimizer.learning_rate!r} must be > 0")
  if not 0.0 <= config.label_smoothing < 1.0:
    raise ValueError(f"config.label_smoothing = {config.label_smoothing!r} must be in [0, 1)")
  input_pipeline.sources.check_input(config)
  if config.eval.corruption:
    corruptions.check(config.eval.corruption, config.eval.severity)


def corruption_labels(config) -> dict:
  """{'corruption': name, 'severity': s} of corrupted evaluations, {} for clean ones."""
  return (
    {"corruption": config.eval.corruption, "severity": config.eval.severity}
    if config.eval.corruption
    else {}
  )


class Trainer:
  """Builds the model, optimiser, mesh, data and compiled steps of one config, and owns the
  workdir while it lives (`with Trainer(...) as trainer:`; process 0 holds the workdir's lock).

  devices: the devices of the data-parallel mesh; every device of every host by default.
  """

  def __init__(self, config, workdir: str, devices: Sequence[jax.Device] | None = None):
    validate_config(config)
    self.config = config
    self.workdir = workdir_lib.prepare(workdir)
    self.lock = workdir_lib.WorkdirLock(self.workdir)
    busy = None
    try:  # from here on, whatever stops the start (a signal included) gives the lock back
      if jax.process_index() == 0:
        try:
          with preemption.deferred():  # not cut between taking the lock and owning it
            self.lock.acquire()
        except workdir_lib.WorkdirBusyError as e:
          busy = e
      if (
        jax.process_count() > 1
        and multihost_utils.broadcast_one_to_all(np.int32(busy is not None))
        and not busy
      ):
        raise workdir_lib.WorkdirBusyError(
          f"process 0 found --workdir {self.workdir} in use by another run"
        )
      if busy:
        raise busy
      self._build(devices)
    except BaseException:
      self.lock.release()
      raise

  def _build(self, devices) -> None:
    config = self.config
    self.mesh = sharding.make_mesh(devices)
    self.local_batch = sharding.check_batch_size(
      config.batch_size, self.mesh, config.grad_accum_steps
    )
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
      steps.make_train_step(
        self.graphs,
        self.tx,
        self.schedule,
        config.label_smoothing,
        config.grad_accum_steps,
        config.input.image_size,
        crop_bounds(config.input.train_crop, config.input.resize_hw),
      ),
      in_shardings=(self.replicated, batch, self.replicated),
      out_shardings=(self.replicated, self.replicated),
      donate_argnums=0,
    )
    self.eval_step = jax.jit(
      steps.make_eval_step(self.graphs),
      in_shardings=(self.replicated, batch),
      out_shardings=self.replicated,
    )
    writes = jax.process_index() == 0
    self.writer = reporting.MetricsWriter(self.workdir, enabled=writes)
    self.checkpoints = checkpoints.TrainCheckpoints(
      self.workdir, config, config.keep_checkpoints, writer=writes, evaluation_rows=self.writer.rows
    )

  def __enter__(self) -> Trainer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def close(self) -> None:
    """Finishes the checkpoints in flight and gives the workdir up (a signal meanwhile waits)."""
    with preemption.deferred():
      try:
        self.checkpoints.close()
        self.writer.close()
      finally:
        self.lock.release()

  def resume(self) -> int:
    """Restores the latest good checkpoint (damaged ones are set aside, with a warning)."""
    step, self.state, damaged = self.checkpoints.restore_latest(self.state)
    for reason in damaged:
      _say(
        f"skipped the damaged checkpoint of {reason}; moved to "
        f"{self.checkpoints.directory / 'damaged'}"
      )
    if step is not None:
      _say(f"resumed from step {step} of {self.checkpoints.directory}")
    return int(self.state.step)

  def evaluate(self, split: str = "validation") -> dict:
    """Evaluates the current state on the evaluation split; writes the per-class report
    WORKDIR/eval_{split}_step{N}.json and returns the classification report."""
    batches = self.source.eval_batches(
      self.config.batch_size, jax.process_index(), jax.process_count()
    )
    corruption = corruption_labels(self.config)
    if corruption:
      batches = corruptions.corrupt_batches(
        batches, corruption["corruption"], corruption["severity"], self.config.seed
      )
    probabilities, labels = evaluation.split_probabilities(batches, self.logits)
    report = evaluation.classification_report(
      probabilities, labels, self.config.dataset.num_classes
    )
    step = int(self.state.step)
    if jax.process_index() == 0:
      name = "_".join([split, *map(str, corruption.values())])
      write_json_atomically(
        self.workdir / f"eval_{name}_step{step}.json",
        {
          "step": step,
          **corruption,
          "class_names": list(getattr(self.source, "class_names", [])),
          "per_class_top1": [
            None if math.isnan(v) else v for v in report["per_class_top1"].tolist()
          ],
          "confusion": report["confusion"].tolist(),
        },
      )
    return report

  def _evaluate_checkpoint(self, step: int) -> dict:
    """Evaluates the saved state of `step`, records it for keep-best and in metrics.jsonl."""
    preemption.set_moment(f"the evaluation of step {step}")
    try:
      report = self.evaluate()
    except (ValueError, OSError) as e:
      raise EvaluationError(
        f"evaluation at step {step} failed: {e}. Checkpoint {step} is complete in "
        f"{self.checkpoints.directory}; "
        "fix the evaluation data and rerun the same command: it evaluates that checkpoint and goes "
        "on"
      ) from e
    scalars = {k: float(report[k]) for k in evaluation.SCALARS}
    self.checkpoints.record_evaluation(step, scalars)
    self.writer.write(step, "validation", scalars)
    _say(
      f"step {step}: validation loss {scalars['loss']:.4f} top-1 {scalars['top1']:.2%} "
      f"top-5 {scalars['top5']:.2%} mean class accuracy {scalars['mean_class_accuracy']:.2%}"
    )
    return scalars

  @staticmethod
  def _minutes_since(start: float) -> float:
    """Minutes since `start` on process 0's clock, so that every host decides alike."""
    minutes = (time.monotonic() - start) / 60
    if jax.process_count() > 1:
      minutes = float(multihost_utils.broadcast_one_to_all(np.float32(minutes)))
    return minutes

  def _evaluates(self, step: int) -> bool:
    return step % self.config.eval_every_steps == 0 or step == self.config.total_steps

  def logits(self, batch: dict) -> np.ndarray:
    """Eval-mode logits of the global batch whose host-local part is {'clips', 'labels'}."""
    return np.asarray(self.eval_step(self.state, sharding.global_batch(batch, self.mesh)))

  def train(self) -> dict:
    """Trains from the latest checkpoint to config.total_steps; returns the last evaluation.

    A checkpoint is written, and finished, before each evaluation, so a failed evaluation
    loses nothing; a rerun evaluates a checkpoint whose evaluation did not finish.
    """
    config = self.config
    start = self.resume()
    recorded = self.checkpoints.evaluations
    # metrics.jsonl holds one row per (step, split): rows past the restored step, and an
    # evaluation of it that did not finish, belong to the lost part of an earlier run. The rows
    # of the restored step itself are written again from its record when they were lost (cut off
    # mid-append, or not yet uploaded to a bucket when the run was killed).
    saved_rows = {
      "train": self.checkpoints.train_row(start),
      "validation": recorded.get(start),
    }
    self.writer.keep_rows(
      lambda row: (
        row["step"] < start
        or (row["step"] == start and (row["split"] == "train" or start in recorded))
      ),
      restore={(start, split): row for split, row in saved_rows.items() if row is not None},
    )
    last_eval = recorded.get(start)
    if start > 0 and self._evaluates(start) and last_eval is None:
      last_eval = self._evaluate_checkpoint(start)
    if start >= config.total_steps:
      _say(f"already trained for {start} steps (config.total_steps = {config.total_steps})")
    with (
      tqdm(
        total=config.total_steps,
        initial=start,
        unit="step",
        dynamic_ncols=True,
        disable=jax.process_index() != 0,
      ) as bar,
      preemption.StopRequests() as stop,
    ):
      tick, tick_step, saved_at = time.perf_counter(), start, time.monotonic()
      batches = self.source.train_iterator(
        start, config.batch_size, jax.process_index(), jax.process_count()
      )
      for step in range(start, config.total_steps):
        local = {k: v for k, v in next(batches).items() if k in MODEL_INPUTS}
        self.state, metrics = self.train_step(
          self.state, sharding.global_batch(local, self.mesh), self.rng
        )
        done = step + 1
        bar.update(1)
        stops = stop.requested(done)
        evaluates = (
          self._evaluates(done) and not stops
        )  # a stopped run's rerun evaluates this checkpoint
        logs = done % config.log_every_steps == 0
        saves = (
          stops
          or evaluates
          or done % config.checkpoint_every_steps == 0
          or (logs and self._minutes_since(saved_at) >= config.checkpoint_every_minutes > 0)
        )
        if logs or saves:
          metrics = jax.device_get(metrics)
          if not (np.isfinite(metrics["loss"]) and metrics["params_finite"]):
            what = (
              f"loss is {metrics['loss']}"
              if not np.isfinite(metrics["loss"])
              else "parameters overflowed"
            )
            raise NonFiniteLossError(
              f"{what} at step {done}; stopping. The last checkpoint in "
              f"{self.checkpoints.directory} (step {self.checkpoints.latest_step()}) is intact"
            )
          now = time.perf_counter()
          clips_per_s = (done - tick_step) * config.batch_size / max(now - tick, 1e-9)
          tick, tick_step = now, done
          bar.set_postfix(
            loss=f"{metrics['loss']:.3f}", lr=f"{metrics['lr']:.2e}", clips_s=f"{clips_per_s:.1f}"
          )
          train_row = {**metrics, "clips_per_second": clips_per_s}
          self.writer.write(done, "train", train_row)
        if saves:
          self.lock.check()
          self.checkpoints.save(done, self.state, wait=evaluates or stops, train_row=train_row)
          self.writer.flush()
          saved_at = time.monotonic()
        if evaluates:
          with preemption.interruptible():  # its checkpoint is complete: a rerun evaluates it
            last_eval = self._evaluate_checkpoint(done)
        if stops:
          raise preemption.Preempted(done, stop.signal_name, self.checkpoints.directory)
    self.export_model()
    if last_eval is None:
      preemption.set_moment("the final evaluation")
      last_eval = self.evaluate()
    return last_eval

  def export_model(self) -> None:
    """Writes the final model to WORKDIR/model, the directory predict and visualize read (every
    process takes part: orbax writes the replicated weights once)."""
    preemption.set_moment(f"the export of {self.workdir / 'model'} (a rerun writes it again)")
    model = nnx.merge(self.graphs.eval, self.state.params, self.state.batch_stats)
    train = getattr(self.source, "train", None)
    card = model_card.training_card(
      self.config,
      self.workdir / "model",
      self.checkpoints.evaluations,
      int(self.state.step),
      len(train) if train is not None else None,
    )
    names = list(getattr(self.source, "class_names", None) or []) or None
    model_dir.replace(self.workdir / "model", model, self.config, names, card)


def _say(message: str) -> None:
  """A line for the person running the job (process 0 only), beside the progress bar."""
  if jax.process_index() == 0:
    tqdm.write(message, file=sys.stderr)


def train_and_evaluate(config, workdir: str, devices: Sequence[jax.Device] | None = None) -> dict:
  if config.eval.corruption:
    raise ValueError(
      f"config.eval.corruption = {config.eval.corruption!r} is for --mode=eval: training's "
      "evaluations pick the best checkpoint on clean clips"
    )
  with Trainer(config, workdir, devices) as trainer:
    return trainer.train()


def evaluate_only(config, workdir: str, devices: Sequence[jax.Device] | None = None) -> dict:
  """Evaluates the workdir's latest checkpoint, or config.init_from when the workdir has none."""
  with Trainer(config, workdir, devices) as trainer:
    if trainer.checkpoints.latest_step() is None and not config.init_from:
      raise ValueError(
        f"nothing to evaluate: {trainer.checkpoints.directory} is empty and config.init_from is "
        "unset"
      )
    step = trainer.resume()
    preemption.set_moment(f"the evaluation of step {step}")
    report = trainer.evaluate()
    labels = corruption_labels(config)

    def same_evaluation(row):
      return (
        (row["step"], row["split"]) == (step, "validation")
        and all(row.get(k) == v for k, v in labels.items())
        and (labels or "corruption" not in row)
      )

    trainer.writer.keep_rows(lambda row: not same_evaluation(row))
    trainer.writer.write(step, "validation", {k: report[k] for k in evaluation.SCALARS}, labels)
    return report
