"""Clip arrays on disk: clips (N, T, H, W, 3) in a .npy file, normalised float or uint8 RGB
pixels."""

from __future__ import annotations

import numpy as np
from etils import epath

from input_pipeline import normalization


def load_clips(path: str) -> np.ndarray:
  """Reads and checks a clip array (a local or gs:// path), naming the file in every error;
  returns normalised float32 clips."""
  path = epath.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"clip file {path} does not exist")
  try:
    with path.open("rb") as f:
      clips = np.load(f, allow_pickle=False)
  except ValueError as e:
    raise ValueError(f"{path} is not a .npy array: {e}") from e
  if clips.ndim != 5 or clips.shape[-1] != 3:
    raise ValueError(f"{path} holds shape {clips.shape}; expected clips (N, T, H, W, 3)")
  if clips.dtype == np.uint8:
    return normalization.model_input(clips)
  if not np.issubdtype(clips.dtype, np.floating):
    raise ValueError(
      f"{path} holds {clips.dtype}; expected normalised float clips or uint8 RGB pixels"
    )
  return clips.astype(np.float32)
