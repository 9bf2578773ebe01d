"""The config a model directory was trained with, read from its model_config.json.

  python -m stss_jax.predict --checkpoint=runs/ssv2/model --video=clip.webm
  python -m stss_jax.predict --config=configs/from_model.py:runs/ssv2/model --video=clip.webm \
      --config.input.eval_clips=2

Commands given --checkpoint without --config use this file, so that --config.KEY=VALUE still
overrides what may differ at inference (evaluation views, the data dir, the batch size).
"""

import json

import ml_collections
from etils import epath

# What model_config.json's "format_version" says: 1 (no such key) records the architecture only;
# 2 adds the whole training config, the class names and a model card beside it.
FORMAT_VERSION = 2
CONFIG_FILE = "model_config.json"


def read_record(directory) -> dict:
  """DIR/model_config.json, or an error naming the file; a newer format is refused."""
  path = epath.Path(directory) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(
      f"{directory} is not a model directory (no {CONFIG_FILE}); write one with "
      "python -m stss_jax.convert or the trainer"
    )
  try:
    record = json.loads(path.read_text())
  except ValueError as e:
    raise ValueError(f"{path} is unreadable: {e}") from None
  version = record.get("format_version", 1)
  if version > FORMAT_VERSION:
    raise ValueError(
      f"{path} is of format {version}, newer than this stss-jax reads ({FORMAT_VERSION}): "
      "upgrade stss-jax"
    )
  return record


def as_config(values) -> ml_collections.ConfigDict:
  """A config from its JSON form: JSON's lists become the tuples the configs are written with."""

  def tuples(value):
    if isinstance(value, dict):
      return {key: tuples(item) for key, item in value.items()}
    if isinstance(value, list):
      return tuple(tuples(item) for item in value)
    return value

  return ml_collections.ConfigDict(tuples(values))


def get_config(directory=None):
  """`directory`: the model directory (a local path or gs://...)."""
  if not directory:
    raise ValueError("configs/from_model.py:DIR needs the model directory DIR")
  record = read_record(directory)
  if "config" not in record:
    raise ValueError(
      f"{directory} records no training config (it was written before model directories "
      "did): pass --config=configs/NAME.py with the training run's overrides"
    )
  return as_config(record["config"])
