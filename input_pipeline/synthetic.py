"""A procedural video dataset whose classes differ only in motion.

Each clip shows one textured object on a textured background; its class is the direction of its
motion. Classes come in time-reversed pairs (right/left, down/up, approaching/receding), so a
model that ignores frame order cannot tell the two of a pair apart. Every clip is a pure
function of (seed, split, index): nothing is stored, a resumed run sees the same data, and
train and validation draw appearances from different seeds.
"""
from __future__ import annotations

import dataclasses

import numpy as np

CLASSES = ("moving right", "moving left", "moving down", "moving up", "approaching", "receding")
REVERSED = ((0, 1), (2, 3), (4, 5))  # pairs that are each other played backwards
SPLIT_SEEDS = {"train": 0, "validation": 1}
# ImageNet statistics: clips are normalised like real video so the same model code applies.
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclasses.dataclass(frozen=True)
class SyntheticMotion:
  """Clips (T, S, S, 3) of `num_frames` frames of side `image_size`."""

  num_frames: int = 8
  image_size: int = 64
  seed: int = 0
  step_fraction: float = 0.06  # displacement per frame, as a fraction of the image side

  def clip(self, split: str, index: int) -> tuple[np.ndarray, int]:
    """The normalised clip (T, S, S, 3) float32 and its label."""
    if split not in SPLIT_SEEDS:
      raise ValueError(f"synthetic split must be one of {sorted(SPLIT_SEEDS)}, got {split!r}")
    rng = np.random.default_rng([self.seed, SPLIT_SEEDS[split], index])
    label = int(rng.integers(len(CLASSES)))
    size, frames = self.image_size, self.num_frames
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = np.meshgrid(grid, grid, indexing="ij")

    background = _texture(rng, size, yy, xx)
    foreground = _texture(rng, size, yy, xx)
    radius = rng.uniform(0.10, 0.16)
    square = rng.random() < 0.5
    step = self.step_fraction * rng.uniform(0.8, 1.25)
    span = step * (frames - 1)
    # Start where the whole path stays inside the frame.
    centre = rng.uniform(0.2, 0.8, size=2)
    direction = {0: (0, 1), 1: (0, -1), 2: (1, 0), 3: (-1, 0)}.get(label, (0, 0))
    start = centre - np.array(direction) * span / 2
    scale_rate = 1.0 + 1.6 * step  # growth per frame for approaching / receding
    clip = np.empty((frames, size, size, 3), np.float32)
    for t in range(frames):
      y, x = start + np.array(direction) * step * t
      r = radius
      if label == 4:
        r = radius * scale_rate ** (t - (frames - 1) / 2)
      elif label == 5:
        r = radius * scale_rate ** ((frames - 1) / 2 - t)
      if square:
        inside = (np.abs(yy - y) < r) & (np.abs(xx - x) < r)
      else:
        inside = (yy - y) ** 2 + (xx - x) ** 2 < r ** 2
      frame = np.where(inside[..., None], foreground, background)
      clip[t] = frame + rng.normal(0, 0.02, frame.shape)
    clip = np.clip(clip, 0.0, 1.0)
    return (clip - MEAN) / STD, label

  def batch(self, split: str, indices) -> dict[str, np.ndarray]:
    clips, labels = zip(*(self.clip(split, int(i)) for i in indices))
    return {"clips": np.stack(clips), "labels": np.array(labels, np.int32)}


def _texture(rng, size, yy, xx) -> np.ndarray:
  """A random colour modulated by a random low-frequency pattern, (S, S, 3) in [0, 1]."""
  colour = rng.uniform(0.1, 0.9, size=3).astype(np.float32)
  fy, fx = rng.uniform(1, 6, size=2)
  phase = rng.uniform(0, 2 * np.pi)
  pattern = 0.5 + 0.5 * np.sin(2 * np.pi * (fy * yy + fx * xx) + phase)
  contrast = rng.uniform(0.05, 0.3)
  return np.clip(colour[None, None] * (1 - contrast) + contrast * pattern[..., None], 0, 1).astype(np.float32)
