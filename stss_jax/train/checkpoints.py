"""Checkpoints: model directories (convert, init_from, predict) and a workdir's train states.

Layout of DIR:
  DIR/model/              orbax pytree {'params': ..., 'batch_stats': ...} in our module paths
  DIR/model_config.json   the architecture it belongs to, checked before anything is loaded
Orbax writes into a temporary directory and renames it when complete, and the JSON is written
with an atomic replace last, so a killed save never leaves a checkpoint that looks whole.
"""
from __future__ import annotations

import json
import os
import pathlib
import tempfile

import jax
import orbax.checkpoint as ocp
from flax import nnx

MODEL_DIR = "model"
CONFIG_FILE = "model_config.json"
# Keys that change how the model computes, not what its weights mean.
NOT_ARCHITECTURE = ("dtype", "dropout")
NOT_SELFY_ARCHITECTURE = ("stss_implementation", "extraction_implementation")


def architecture(config) -> dict:
  """The part of a config that a checkpoint's weights are tied to."""
  model = {k: v for k, v in config.model.to_dict().items() if k not in NOT_ARCHITECTURE}
  model["selfy"] = {k: v for k, v in model["selfy"].items() if k not in NOT_SELFY_ARCHITECTURE}
  return json.loads(json.dumps({"model": model, "num_classes": config.dataset.num_classes}))


def _variables(model: nnx.Module) -> nnx.State:
  return nnx.state(model, (nnx.Param, nnx.BatchStat))


def save_model(directory: str | os.PathLike, model: nnx.Module, config) -> pathlib.Path:
  """Writes `model`'s parameters and BN statistics to a new directory."""
  directory = pathlib.Path(directory).absolute()
  if directory.exists() and any(directory.iterdir()):
    raise FileExistsError(f"{directory} exists and is not empty; choose a new directory")
  directory.mkdir(parents=True, exist_ok=True)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(directory / MODEL_DIR, nnx.to_pure_dict(_variables(model)))
  checkpointer.wait_until_finished()
  _write_json_atomically(directory / CONFIG_FILE, architecture(config))
  return directory


def restore_model(directory: str | os.PathLike, model: nnx.Module, config) -> None:
  """Loads a checkpoint written by save_model into `model`, refusing one of another model."""
  directory = pathlib.Path(directory).absolute()
  config_path = directory / CONFIG_FILE
  if not config_path.is_file() or not (directory / MODEL_DIR).is_dir():
    raise FileNotFoundError(
        f"{directory} is not a model checkpoint (no {CONFIG_FILE} and {MODEL_DIR}/); "
        "write one with python -m stss_jax.convert or the trainer"
    )
  saved = json.loads(config_path.read_text())
  wanted = architecture(config)
  differences = _differences(saved, wanted)
  if differences:
    raise ValueError(
        f"checkpoint {directory} belongs to another model: " + "; ".join(differences)
    )
  variables = _variables(model)
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, nnx.to_pure_dict(variables))
  restored = ocp.StandardCheckpointer().restore(directory / MODEL_DIR, target)
  nnx.replace_by_pure_dict(variables, restored)
  nnx.update(model, variables)


def _differences(saved: dict, wanted: dict, prefix: str = "") -> list[str]:
  out = []
  for key in sorted(set(saved) | set(wanted)):
    a, b = saved.get(key), wanted.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      out += _differences(a, b, f"{prefix}{key}.")
    elif a != b:
      out.append(f"{prefix}{key} is {a!r} in the checkpoint, {b!r} in the config")
  return out


class TrainCheckpoints:
  """The train states of one workdir: asynchronous, atomic, the last `keep` plus the best.

  The architecture is recorded beside them, so that a workdir is never resumed with another
  model's config.
  """

  def __init__(self, workdir: str | os.PathLike, config, keep: int):
    self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
    self.directory.mkdir(parents=True, exist_ok=True)
    recorded = self.directory / CONFIG_FILE
    wanted = architecture(config)
    if recorded.is_file():
      differences = _differences(json.loads(recorded.read_text()), wanted)
      if differences:
        raise ValueError(
            f"{self.directory} holds checkpoints of another model ({'; '.join(differences)}); "
            "use a new --workdir"
        )
    else:
      _write_json_atomically(recorded, wanted)
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


def _write_json_atomically(path: pathlib.Path, content) -> None:
  with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
    json.dump(content, f, indent=2)
  os.replace(f.name, path)
