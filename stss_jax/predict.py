"""Eval-mode logits of a model checkpoint for a clip array.

  python -m stss_jax.predict --config=configs/ssv1.py --checkpoint=DIR --clip=clip.npy \
      --output=logits.npy

`clip.npy` holds normalised clips (N, T, H, W, 3) float32 (ImageNet mean/std, as fed to the
model); `logits.npy` receives (N, classes) float32.
"""
from __future__ import annotations

import pathlib
import sys

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from stss_jax.models import build_model
from stss_jax.train.checkpoints import restore_model

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Model checkpoint directory (convert or trainer).")
_CLIP = flags.DEFINE_string("clip", None, ".npy file of clips (N, T, H, W, 3) float32.")
_OUTPUT = flags.DEFINE_string("output", None, ".npy file to write logits (N, classes) to.")


def load_clips(path: str) -> np.ndarray:
  """Reads and checks a clip array, naming the file in every error."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"clip file {path} does not exist")
  try:
    clips = np.load(path, allow_pickle=False)
  except ValueError as e:
    raise ValueError(f"{path} is not a .npy array: {e}") from e
  if clips.ndim != 5 or clips.shape[-1] != 3:
    raise ValueError(f"{path} holds shape {clips.shape}; expected clips (N, T, H, W, 3)")
  if not np.issubdtype(clips.dtype, np.floating):
    raise ValueError(f"{path} holds {clips.dtype}; expected normalised float32 clips")
  return clips.astype(np.float32)


def predict(model, clips: np.ndarray) -> np.ndarray:
  """Eval-mode logits (N, classes) float32."""
  model.eval()
  return np.asarray(jax.jit(lambda m, x: m(x))(model, clips), np.float32)


def main(argv):
  del argv
  config = _CONFIG.value
  if config is None or not _CHECKPOINT.value or not _CLIP.value or not _OUTPUT.value:
    raise app.UsageError("--config, --checkpoint, --clip and --output are all required")
  try:
    clips = load_clips(_CLIP.value)
    model = build_model(config)
    restore_model(_CHECKPOINT.value, model, config)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  logits = predict(model, clips)
  np.save(_OUTPUT.value, logits)
  print(f"wrote logits {logits.shape} to {_OUTPUT.value}; top-1 classes {logits.argmax(-1).tolist()}")
  return 0


if __name__ == "__main__":
  app.run(main)
