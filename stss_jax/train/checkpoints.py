"""A workdir's train states: asynchronous, atomic orbax checkpoints, the last few and the best."""
from __future__ import annotations

import json
import os
import pathlib

import jax
import orbax.checkpoint as ocp

from stss_jax import model_dir
from stss_jax.files import write_json_atomically


class TrainCheckpoints:
  """The train states of one workdir: asynchronous, atomic, the last `keep` plus the best.

  The architecture is recorded beside them, so that a workdir is never resumed with another
  model's config.
  """

  def __init__(self, workdir: str | os.PathLike, config, keep: int):
    self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
    self.directory.mkdir(parents=True, exist_ok=True)
    recorded = self.directory / model_dir.CONFIG_FILE
    wanted = model_dir.architecture(config)
    if recorded.is_file():
      differences = model_dir.differences(json.loads(recorded.read_text()), wanted)
      if differences:
        raise ValueError(
            f"{self.directory} holds checkpoints of another model ({'; '.join(differences)}); "
            "use a new --workdir"
        )
    else:
      write_json_atomically(recorded, wanted)
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(keep),
        ocp.checkpoint_managers.BestN(
            get_metric_fn=lambda metrics: metrics["top1"], n=1, keep_checkpoints_without_metrics=False
        ),
    ])
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(preservation_policy=policy, enable_async_checkpointing=True),
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, metrics: dict | None = None) -> None:
    self.manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics)

  def restore(self, state, step: int | None = None):
    """The saved state at `step` (the latest if None) shaped and sharded like `state`."""
    step = self.latest_step() if step is None else step
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return self.manager.restore(step, args=ocp.args.StandardRestore(target))

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
