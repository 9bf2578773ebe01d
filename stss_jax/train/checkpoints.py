"""A workdir's train states: asynchronous, atomic orbax checkpoints, the last few and the best,
each checked against a digest of its arrays when it is restored."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from stss_jax import evaluation, model_dir, storage
from stss_jax.files import write_json_atomically
from stss_jax.train import reporting
from stss_jax.train import workdir as workdir_lib

STEPS_FILE = "steps.json"  # per step: the digest of its arrays and, once evaluated, its evaluation


class NoGoodCheckpointError(ValueError):
  """Every checkpoint of a workdir is damaged."""


@jax.jit
def state_digest(state) -> jax.Array:
  """(leaves, 2) uint32: per leaf, the sum of its words and their sum weighted by position (mod
  2**32). A changed, lost or moved byte changes it; it is computed where the state lives."""

  def words(leaf):
    leaf = jnp.asarray(leaf)
    if leaf.dtype == jnp.bool_:
      return leaf.astype(jnp.uint32).reshape(-1)
    unsigned = {4: jnp.uint32, 2: jnp.uint16, 1: jnp.uint8}[leaf.dtype.itemsize]
    return jax.lax.bitcast_convert_type(leaf, unsigned).astype(jnp.uint32).reshape(-1)

  rows = []
  for leaf in jax.tree.leaves(state):
    w = words(leaf)
    position = jnp.arange(1, w.size + 1, dtype=jnp.uint32)
    rows.append(jnp.stack([jnp.sum(w, dtype=jnp.uint32), jnp.sum(w * position, dtype=jnp.uint32)]))
  return jnp.stack(rows)


class LatestAndBest:
  """Orbax preservation policy: the last `keep` checkpoints, the one of the best top-1, and every
  one whose evaluation is unknown (`unknown(step)`: its record was lost), which might be the best.

  The top-1 of each step comes from `top1_of(step)` (None while a step is not evaluated), a record
  kept beside the checkpoints (STEPS_FILE) rather than in orbax's metrics, so that a checkpoint is
  written before its evaluation and the best one is still known after a restart.
  """

  def __init__(self, keep: int, top1_of, unknown=lambda step: False):
    self.keep = keep
    self.top1_of = top1_of
    self.unknown = unknown

  def should_preserve(self, checkpoints, *, context) -> list[bool]:
    del context
    steps = [info.step for info in checkpoints]
    keep = set(sorted(steps)[-self.keep :])
    scored = [(self.top1_of(step), step) for step in steps if self.top1_of(step) is not None]
    if scored:
      keep.add(max(scored, key=lambda item: (item[0], -item[1]))[1])  # the earliest of equal top-1s
    return [step in keep or self.unknown(step) for step in steps]


def _hex(digest: jax.Array) -> str:
  return np.asarray(digest, ">u4").tobytes().hex()


class TrainCheckpoints:
  """The train states of one workdir: asynchronous, atomic, the last `keep` plus the best.

  The architecture is recorded beside them, so that a workdir is never resumed with another
  model's config, and so is each step's record (STEPS_FILE): the digest of its arrays, which
  `restore_latest` checks, and its evaluation, which picks the best.
  """

  def __init__(
    self,
    workdir: str | os.PathLike,
    config,
    keep: int,
    writer: bool = True,
    evaluation_rows=lambda: [],
  ):
    """evaluation_rows: a function that returns metrics.jsonl's rows, read only when records of
    checkpoints on disk are missing (STEPS_FILE lost or damaged): their evaluations are rebuilt
    from its validation rows."""
    self.directory = storage.path(workdir) / "checkpoints"
    self.writer = writer  # process 0 writes the records; every process reads them
    self.keep = keep
    workdir_lib.writable_directory(self.directory, str(self.directory))
    recorded = self.directory / model_dir.CONFIG_FILE
    wanted = model_dir.architecture(config)
    if recorded.is_file():
      differences = model_dir.differences(json.loads(recorded.read_text()), wanted)
      if differences:
        raise ValueError(
          f"{self.directory} holds checkpoints of another model ({'; '.join(differences)}); "
          "use a new --workdir"
        )
    elif writer:
      write_json_atomically(recorded, wanted)
    self.records, problem = self._read_records()
    # Steps on disk without a record: their evaluation is unknown until rebuilt, and they are
    # kept until then.
    self.unknown: set[int] = set()
    self.manager = self._open_manager()
    missing = sorted(set(self.steps()) - set(self.records))
    if missing:
      self._rebuild_evaluations(missing, problem, evaluation_rows())

  def _read_records(self) -> tuple[dict[int, dict], str]:
    """(records, what is wrong with STEPS_FILE: '' when nothing)."""
    path = self.directory / STEPS_FILE
    if not path.is_file():
      return {}, f"{path} is missing"
    try:
      records = {int(k): dict(v) for k, v in json.loads(path.read_text()).items()}
    except (ValueError, TypeError, AttributeError) as e:
      return {}, f"{path} is unreadable ({' '.join(str(e).split())})"
    return records, ""

  def _rebuild_evaluations(self, missing: list[int], problem: str, rows: list[dict]) -> None:
    """Records the evaluations of the `missing` steps from metrics.jsonl's clean validation rows;
    the steps with none stay `unknown` (kept, never deleted by the retention policy)."""
    found = {
      row["step"]: {k: row[k] for k in evaluation.SCALARS}
      for row in rows
      if row.get("split") == "validation"
      and "corruption" not in row
      and row.get("step") in missing
      and all(k in row for k in evaluation.SCALARS)
    }
    for step in missing:
      self.records[step] = {"evaluation": found[step]} if step in found else {}
    self.unknown = {step for step in missing if step not in found}
    self._write_records()
    cause = problem or f"{self.directory / STEPS_FILE} has no record of them"
    logging.warning(
      "%s: checkpoints %s have no recorded digest, so they are restored unchecked; their "
      "evaluations were rebuilt from metrics.jsonl for %s%s",
      cause,
      missing,
      sorted(found) or "none",
      f", and {sorted(self.unknown)}, whose evaluation is unknown, are kept until deleted by hand"
      if self.unknown
      else "",
    )

  def _open_manager(self) -> ocp.CheckpointManager:
    policy = LatestAndBest(
      self.keep,
      lambda step: (self.evaluation(step) or {}).get("top1"),
      lambda step: step in self.unknown,
    )
    return ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        preservation_policy=policy, enable_async_checkpointing=True
      ),
    )

  @property
  def evaluations(self) -> dict[int, dict]:
    return {step: r["evaluation"] for step, r in self.records.items() if "evaluation" in r}

  def train_row(self, step: int) -> dict | None:
    """The metrics row of training step `step` as it was logged, if its record keeps it."""
    return self.records.get(step, {}).get("train")

  def evaluation(self, step: int) -> dict | None:
    return self.records.get(step, {}).get("evaluation")

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def _write_records(self) -> None:
    if self.writer:
      write_json_atomically(
        self.directory / STEPS_FILE, {str(k): v for k, v in sorted(self.records.items())}
      )

  def save(self, step: int, state, wait: bool = False, train_row: dict | None = None) -> None:
    """Starts writing `state` as `step`; with `wait`, returns once it is complete on disk.
    train_row: the step's metrics row, kept in its record so that a lost row can be rewritten."""
    self.records[step] = {"digest": _hex(state_digest(state))}
    if train_row is not None:
      self.records[step]["train"] = reporting.plain_row(train_row)
    self._write_records()
    self.manager.save(step, args=ocp.args.StandardSave(state))
    if wait:
      self.manager.wait_until_finished()

  def record_evaluation(self, step: int, report: dict) -> None:
    """Records the evaluation of checkpoint `step` (evaluation.SCALARS, plain floats)."""
    self.records.setdefault(step, {})["evaluation"] = report
    self.unknown.discard(step)
    self._write_records()

  def restore(self, state, step: int):
    """The saved state of `step`, shaped and sharded like `state`, checked against its digest."""
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    restored = self.manager.restore(step, args=ocp.args.StandardRestore(target))
    digest = self.records.get(step, {}).get("digest")
    # A step without a digest lost its record (_rebuild_evaluations said so): restored unchecked.
    if digest is not None and _hex(state_digest(restored)) != digest:
      raise ValueError("its arrays differ from what was saved (damaged on disk)")
    return restored

  def restore_latest(self, state) -> tuple[int | None, object, list[str]]:
    """(step, state, damaged) of the latest checkpoint that restores and matches its digest, or
    (None, state, damaged) when there is none; `damaged` says which later ones were skipped and
    why. Damaged checkpoints are moved to checkpoints/damaged/, so that training can write those
    steps again."""
    damaged = []
    for step in sorted(self.steps(), reverse=True):
      try:
        restored = self.restore(state, step)
      except Exception as e:  # noqa: BLE001  orbax, tensorstore and json each raise their own kinds
        # TensorStore appends its whole spec ("See full TensorStore details: ..."): the first
        # part says what failed.
        reason = " ".join(str(e).split("See full TensorStore details")[0].split())[:300]
        reason = reason or type(e).__name__
        damaged.append(f"step {step}: {reason}")
        self._set_aside(step)
        continue
      if damaged:
        self.manager.close()
        self.manager = self._open_manager()
      return step, restored, damaged
    if damaged:
      raise NoGoodCheckpointError(
        f"no usable checkpoint in {self.directory} ({'; '.join(damaged)}); the damaged "
        f"ones are in {self.directory / 'damaged'}: use a new --workdir or fix them"
      )
    return None, state, damaged

  def _set_aside(self, step: int) -> None:
    if not self.writer:
      return
    aside = self.directory / "damaged"
    aside.mkdir(exist_ok=True)
    target = aside / str(step)
    suffix = 0
    while target.exists():
      suffix += 1
      target = aside / f"{step}.{suffix}"
    storage.move(self.directory / str(step), target)
    self.records.pop(step, None)
    self.unknown.discard(step)
    self._write_records()

  def close(self) -> None:
    """Waits for the saves in flight; the manager is not used afterwards."""
    if self.manager is not None:
      self.manager.wait_until_finished()
      self.manager.close()
      self.manager = None
