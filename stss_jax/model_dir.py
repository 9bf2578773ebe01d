"""Model directories: a network's weights with the architecture they belong to.

Layout of DIR (written by the trainer as WORKDIR/model, by convert, read by init_from, predict,
visualize, ensemble and the notebook):
  DIR/model/              orbax pytree {'params': ..., 'batch_stats': ...} in our module paths
  DIR/model_config.json   the architecture it belongs to, checked before anything is loaded
Orbax writes into a temporary directory and renames it when complete, and the JSON is written
with an atomic replace last, so a killed save never leaves a directory that looks whole.
"""

from __future__ import annotations

import json
import os

import jax
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from stss_jax import storage
from stss_jax.files import write_json_atomically

WEIGHTS = "model"
CONFIG_FILE = "model_config.json"
# Keys that change how the model computes or starts, not what its weights mean.
NOT_ARCHITECTURE = (
  "dtype",
  "dropout",
  "zero_init_residual",
  "remat",
  "remat_saves",
  "remat_stages",
)


def architecture(config) -> dict:
  """The part of a config that a model's weights are tied to."""
  model = {k: v for k, v in config.model.to_dict().items() if k not in NOT_ARCHITECTURE}
  if not model["selfy"].get("temporal_offsets"):
    # The centred window is described by `window` alone, as in model directories written before
    # offsets could be chosen: they stay loadable.
    model["selfy"].pop("temporal_offsets", None)
  return json.loads(json.dumps({"model": model, "num_classes": config.dataset.num_classes}))


def differences(saved: dict, wanted: dict, prefix: str = "") -> list[str]:
  """'key is A in the checkpoint, B in the config' for every key where two architectures differ."""
  out = []
  for key in sorted(set(saved) | set(wanted)):
    a, b = saved.get(key), wanted.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      out += differences(a, b, f"{prefix}{key}.")
    elif a != b:
      out.append(f"{prefix}{key} is {a!r} in the checkpoint, {b!r} in the config")
  return out


def _variables(model: nnx.Module) -> nnx.State:
  return nnx.state(model, (nnx.Param, nnx.BatchStat))


def save(directory: str | os.PathLike, model: nnx.Module, config) -> epath.Path:
  """Writes `model`'s parameters and BN statistics to a new (or empty) directory."""
  directory = storage.path(directory)
  if directory.exists() and any(directory.iterdir()):
    raise FileExistsError(f"{directory} exists and is not empty; choose a new directory")
  directory.mkdir(parents=True, exist_ok=True)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(directory / WEIGHTS, nnx.to_pure_dict(_variables(model)))
  checkpointer.wait_until_finished()
  write_json_atomically(directory / CONFIG_FILE, architecture(config))
  return directory


def replace(directory: str | os.PathLike, model: nnx.Module, config) -> epath.Path:
  """save() into a sibling directory, then swapped in for `directory`: an older model there stays
  whole until the new one is (on a local disk; a bucket has no atomic rename of a folder)."""
  directory = storage.path(directory)
  fresh = directory.with_name(f"{directory.name}.tmp{os.getpid()}")
  if fresh.exists():
    fresh.rmtree()
  save(fresh, model, config)
  if directory.exists():
    directory.rmtree()
  storage.move(fresh, directory)
  return directory


def restore(directory: str | os.PathLike, model: nnx.Module, config) -> None:
  """Loads a model directory into `model`, refusing one of another architecture (nothing is
  loaded then)."""
  directory = storage.path(directory)
  config_path = directory / CONFIG_FILE
  if not config_path.is_file() or not (directory / WEIGHTS).is_dir():
    if bucket := storage.missing_bucket(directory):
      raise FileNotFoundError(
        f"{directory}: the bucket {bucket} does not exist (or these credentials cannot see it)"
      )
    raise FileNotFoundError(
      f"{directory} is not a model directory (no {CONFIG_FILE} and {WEIGHTS}/); "
      "write one with python -m stss_jax.convert or the trainer"
    )
  found = differences(json.loads(config_path.read_text()), architecture(config))
  if found:
    raise ValueError(f"checkpoint {directory} belongs to another model: " + "; ".join(found))
  variables = _variables(model)
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, nnx.to_pure_dict(variables))
  restored = ocp.StandardCheckpointer().restore(directory / WEIGHTS, target)
  nnx.replace_by_pure_dict(variables, restored)
  nnx.update(model, variables)
