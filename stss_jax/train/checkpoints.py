"""Model checkpoints: a directory the converter writes and the trainer and predictor read.

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
# Keys that change computation but not the weights' meaning or shapes.
NOT_ARCHITECTURE = ("dtype", "dropout")


def architecture(config) -> dict:
  """The part of a config that a checkpoint's weights are tied to."""
  model = {k: v for k, v in config.model.to_dict().items() if k not in NOT_ARCHITECTURE}
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
  checkpointer.save(directory / MODEL_DIR, _variables(model).to_pure_dict())
  checkpointer.wait_until_finished()
  with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as f:
    json.dump(architecture(config), f, indent=2)
  os.replace(f.name, directory / CONFIG_FILE)
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
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, variables.to_pure_dict())
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
