"""Clip arrays on disk: normalised clips (N, T, H, W, 3) float32 in a .npy file."""
from __future__ import annotations

import numpy as np
from etils import epath


def load_clips(path: str) -> np.ndarray:
  """Reads and checks a clip array (a local or gs:// path), naming the file in every error."""
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
  if not np.issubdtype(clips.dtype, np.floating):
    raise ValueError(f"{path} holds {clips.dtype}; expected normalised float32 clips")
  return clips.astype(np.float32)
