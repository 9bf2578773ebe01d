"""The pixel normalisation every clip fed to the model has: ImageNet mean and std per channel.

Batches hold clips in one of two forms: uint8 RGB pixels (the video sources: a quarter of the
bytes to batch and to copy to the accelerator, and no per-pixel arithmetic on the host) or
normalised float32 (the synthetic source). `model_input` turns either into what the model takes,
with whichever array library holds the clips (inside a jitted step, on the accelerator).
"""

from __future__ import annotations

import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # of RGB values in [0, 1]
STD = np.array([0.229, 0.224, 0.225], np.float32)


def normalize(pixels: np.ndarray) -> np.ndarray:
  """RGB values in [0, 1] (..., 3) -> normalised float32 (..., 3)."""
  return ((pixels - MEAN) / STD).astype(np.float32)


# x / 255 normalised is x * PIXEL_SCALE + PIXEL_OFFSET, one multiply-add per value.
PIXEL_SCALE = (1.0 / (255.0 * STD)).astype(np.float32)
PIXEL_OFFSET = (-MEAN / STD).astype(np.float32)


def model_input(clips):
  """uint8 RGB clips (..., 3) -> normalised float32; float clips, already normalised, as they are.
  numpy in, numpy out; jax in (traced or not), jax out."""
  if clips.dtype != np.uint8:
    return clips
  return clips.astype(np.float32) * PIXEL_SCALE + PIXEL_OFFSET


def to_uint8(clips: np.ndarray) -> np.ndarray:
  """Normalised clips (..., 3) -> uint8 RGB (..., 3) to look at (values outside [0, 1] clipped);
  uint8 clips are pixels already."""
  if clips.dtype == np.uint8:
    return clips
  return np.clip((clips * STD + MEAN) * 255, 0, 255).astype(np.uint8)
