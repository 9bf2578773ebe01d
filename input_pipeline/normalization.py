"""The pixel normalisation every clip fed to the model has: ImageNet mean and std per channel."""
from __future__ import annotations

import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # of RGB values in [0, 1]
STD = np.array([0.229, 0.224, 0.225], np.float32)


def normalize(pixels: np.ndarray) -> np.ndarray:
  """RGB values in [0, 1] (..., 3) -> normalised float32 (..., 3)."""
  return ((pixels - MEAN) / STD).astype(np.float32)


def to_uint8(clips: np.ndarray) -> np.ndarray:
  """Normalised clips (..., 3) -> uint8 RGB (..., 3) to look at (values outside [0, 1] clipped)."""
  return np.clip((clips * STD + MEAN) * 255, 0, 255).astype(np.uint8)
