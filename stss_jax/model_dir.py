"""Model directories: a network's weights with everything needed to use them.

Layout of DIR (written by the trainer as WORKDIR/model, by convert, read by init_from, predict,
visualize, ensemble, robustness, export, --mode=eval and the notebook):
  DIR/model/              orbax pytree {'params': ..., 'batch_stats': ...} in our module paths
  DIR/model_config.json   format_version; the architecture ("model", "num_classes"), checked
                          before anything is loaded; the whole config it was trained with
                          ("config": input sizes, evaluation views, dataset); the input
                          "normalization"; "class_names"
  DIR/README.md           the model card: what it is, how it was trained, what it scored
A command given --checkpoint=DIR alone builds its config from DIR (configs/from_model.py).
Directories of format 1 hold the architecture only: commands then need --config, as before.
Orbax writes into a temporary directory and renames it when complete, and the JSON is written
with an atomic replace last, so a killed save never leaves a directory that looks whole.
"""

from __future__ import annotations

import json
import os

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils

from configs import from_model
from input_pipeline import normalization
from stss_jax import storage
from stss_jax.files import write_json_atomically, write_text_atomically

WEIGHTS = "model"
CONFIG_FILE = from_model.CONFIG_FILE
CARD_FILE = "README.md"
# What a model sees: a config that differs from the training run's here feeds it other clips.
INPUT_KEYS = ("num_frames", "image_size", "resize_hw", "dense_sampling")
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


def record(config, class_names=None) -> dict:
  """What model_config.json holds for a model trained with `config`."""
  return {
    "format_version": from_model.FORMAT_VERSION,
    **architecture(config),
    "config": json.loads(config.to_json()),
    # What video clips become before the model sees them: RGB values in [0, 1], then these.
    "normalization": {"mean": normalization.MEAN.tolist(), "std": normalization.STD.tolist()},
    "class_names": None if class_names is None else [str(name) for name in class_names],
  }


def read(directory: str | os.PathLike) -> dict:
  """model_config.json of a model directory (an error names the file or its missing bucket, or
  a newer format)."""
  if bucket := storage.missing_bucket(directory):
    raise FileNotFoundError(
      f"{directory}: the bucket {bucket} does not exist (or these credentials cannot see it)"
    )
  return from_model.read_record(storage.path(directory))


def class_names(directory: str | os.PathLike) -> list[str] | None:
  """The class names a model directory records, or None (format 1, or none were known)."""
  return read(directory).get("class_names")


def check_inference_config(directory: str | os.PathLike, config) -> None:
  """Refuses a config that would feed the model other clips than it was trained on, naming each
  key; a directory that records no config (format 1) gets one warning and --config is trusted."""
  saved = read(directory).get("config")
  if saved is None:
    logging.warning(
      "%s records no training config (an older model directory): its input settings and class "
      "names come from --config",
      directory,
    )
    return
  found = differences(
    {"input": {k: saved["input"].get(k) for k in INPUT_KEYS}},
    json.loads(json.dumps({"input": {k: config.input.get(k) for k in INPUT_KEYS}})),
  )
  if found:
    raise ValueError(
      f"checkpoint {directory} was trained on other clips: "
      + "; ".join(found)
      + " (leave --config out to use the checkpoint's own)"
    )


def _variables(model: nnx.Module) -> nnx.State:
  return nnx.state(model, (nnx.Param, nnx.BatchStat))


def save(
  directory: str | os.PathLike,
  model: nnx.Module,
  config,
  class_names=None,
  card: str | None = None,
) -> epath.Path:
  """Writes `model`'s parameters and BN statistics, its config and class names, and its model
  card (markdown) when given, to a new (or empty) directory.

  With several processes (a pod), every process calls it with the same directory and the model's
  arrays replicated across them: orbax writes the weights together, process 0 the rest.
  """
  directory = storage.path(directory)
  primary = jax.process_index() == 0
  if primary:
    if directory.exists() and any(directory.iterdir()):
      raise FileExistsError(f"{directory} exists and is not empty; choose a new directory")
    directory.mkdir(parents=True, exist_ok=True)
  _all_processes_reach("model_dir.save: directory made")
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(directory / WEIGHTS, nnx.to_pure_dict(_variables(model)))
  checkpointer.wait_until_finished()
  if primary:
    if card is not None:
      write_text_atomically(directory / CARD_FILE, card)
    write_json_atomically(directory / CONFIG_FILE, record(config, class_names))
  _all_processes_reach("model_dir.save: written")
  return directory


def _all_processes_reach(name: str) -> None:
  """A barrier across the processes of a multi-process run (nothing with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def replace(
  directory: str | os.PathLike,
  model: nnx.Module,
  config,
  class_names=None,
  card: str | None = None,
) -> epath.Path:
  """save() into a sibling directory, then swapped in for `directory`: an older model there stays
  whole until the new one is (on a local disk; a bucket has no atomic rename of a folder)."""
  directory = storage.path(directory)
  # One name for every process of a run; the workdir's lock keeps other runs away from it.
  fresh = directory.with_name(f"{directory.name}.new")
  if jax.process_index() == 0 and fresh.exists():
    fresh.rmtree()
  save(fresh, model, config, class_names, card)
  if jax.process_index() == 0:
    if directory.exists():
      directory.rmtree()
    storage.move(fresh, directory)
  _all_processes_reach("model_dir.replace: moved")
  return directory


def restore_for_inference(directory: str | os.PathLike, model: nnx.Module, config) -> None:
  """restore(), after check_inference_config: for the commands that run a trained model."""
  check_inference_config(directory, config)
  restore(directory, model, config)


def restore(directory: str | os.PathLike, model: nnx.Module, config) -> None:
  """Loads a model directory into `model`, refusing one of another architecture (nothing is
  loaded then)."""
  directory = storage.path(directory)
  saved = read(directory)
  if not (directory / WEIGHTS).is_dir():
    raise FileNotFoundError(
      f"{directory} is not a model directory (no {WEIGHTS}/ beside its {CONFIG_FILE}); "
      "write one with python -m stss_jax.convert or the trainer"
    )
  found = differences({k: saved.get(k) for k in ("model", "num_classes")}, architecture(config))
  if found:
    raise ValueError(f"checkpoint {directory} belongs to another model: " + "; ".join(found))
  variables = _variables(model)
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, nnx.to_pure_dict(variables))
  restored = ocp.StandardCheckpointer().restore(directory / WEIGHTS, target)
  nnx.replace_by_pure_dict(variables, restored)
  nnx.update(model, variables)
