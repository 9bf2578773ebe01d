"""A workdir's train states: asynchronous, atomic orbax checkpoints, the last few and the best."""
from __future__ import annotations

import json
import os
import pathlib

import jax
import orbax.checkpoint as ocp

from stss_jax import model_dir
from stss_jax.files import write_json_atomically


EVALUATIONS_FILE = "evaluations.json"


class LatestAndBest:
  """Orbax preservation policy: the last `keep` checkpoints and the one of the best top-1.

  The top-1 of each step comes from `top1_of(step)` (None while a step is not evaluated), a record
  kept beside the checkpoints rather than in orbax's metrics, so that a checkpoint is written
  before its evaluation and the best one is still known after a restart.
  """

  def __init__(self, keep: int, top1_of):
    self.keep = keep
    self.top1_of = top1_of

  def should_preserve(self, checkpoints, *, context) -> list[bool]:
    del context
    steps = [info.step for info in checkpoints]
    keep = set(sorted(steps)[-self.keep:])
    scored = [(self.top1_of(step), step) for step in steps if self.top1_of(step) is not None]
    if scored:
      keep.add(max(scored, key=lambda item: (item[0], -item[1]))[1])  # the earliest of equal top-1s
    return [step in keep for step in steps]


class TrainCheckpoints:
  """The train states of one workdir: asynchronous, atomic, the last `keep` plus the best.

  The architecture is recorded beside them, so that a workdir is never resumed with another
  model's config, and so is each evaluated step's report (EVALUATIONS_FILE), which picks the best.
  """

  def __init__(self, workdir: str | os.PathLike, config, keep: int, writer: bool = True):
    self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
    self.writer = writer  # process 0 writes the records; every process reads them
    try:
      self.directory.mkdir(parents=True, exist_ok=True)
      probe = self.directory / f".write_probe.{os.getpid()}"
      probe.write_text("")
      probe.unlink()
    except OSError as e:
      raise ValueError(f"{self.directory} is not writable: {e.strerror or e}") from e
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
    evaluations = self.directory / EVALUATIONS_FILE
    self.evaluations = {int(k): v for k, v in json.loads(evaluations.read_text()).items()} if evaluations.is_file() else {}
    policy = LatestAndBest(keep, lambda step: self.evaluations.get(step, {}).get("top1"))
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(preservation_policy=policy, enable_async_checkpointing=True),
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state, wait: bool = False) -> None:
    """Starts writing `state` as `step`; with `wait`, returns once it is complete on disk."""
    self.manager.save(step, args=ocp.args.StandardSave(state))
    if wait:
      self.manager.wait_until_finished()

  def record_evaluation(self, step: int, report: dict) -> None:
    """Records the evaluation of checkpoint `step` (loss, top1, top5: plain floats)."""
    self.evaluations[step] = report
    if self.writer:
      write_json_atomically(self.directory / EVALUATIONS_FILE, {str(k): v for k, v in sorted(self.evaluations.items())})

  def restore(self, state, step: int | None = None):
    """The saved state at `step` (the latest if None) shaped and sharded like `state`."""
    step = self.latest_step() if step is None else step
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return self.manager.restore(step, args=ocp.args.StandardRestore(target))

  def close(self) -> None:
    """Waits for the saves in flight; the manager is not used afterwards."""
    if self.manager is not None:
      self.manager.wait_until_finished()
      self.manager.close()
      self.manager = None
