"""A procedural video dataset whose classes differ only in motion.

Each clip shows one textured object (disk, square or bar, its texture moving with it) on a
textured background; its class is how it moves. Most classes come in time-reversed pairs
(right/left, down/up, approaching/receding, rotating either way, fast right/fast left), so a model
that ignores frame order cannot tell the two of a pair apart; "right and back" / "left and back"
are each their own reversal and differ from "right" / "left" only in the path's second half, and
the fast pair differs from the normal one only in speed. Positions wrap around the frame (a
torus), so every path fits and no frame position gives the class away.

`motion_scale` multiplies every speed: 3 gives the fast-motion variant, whose displacement
between sampled frames is larger than a small STSS window reaches. Every clip is a pure function
of (seed, split, index): nothing is stored, a resumed run sees the same data, and train and
validation draw appearances from different seeds.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from input_pipeline import normalization

CLASSES = (
  "moving right",
  "moving left",
  "moving down",
  "moving up",
  "approaching",
  "receding",
  "rotating clockwise",
  "rotating anticlockwise",
  "moving right and back",
  "moving left and back",
  "moving right fast",
  "moving left fast",
)
REVERSED = ((0, 1), (2, 3), (4, 5), (6, 7), (10, 11))  # pairs that are each other played backwards
SPLIT_SEEDS = {"train": 0, "validation": 1}
STEP = 0.0625  # displacement per frame, fraction of the image side (x motion_scale)
FAST = 2.5  # speed of the "fast" classes relative to the others
TURN = 0.25  # rotation per frame, radians (x motion_scale)
GROWTH = 0.1  # relative growth per frame of approaching objects (x motion_scale)
# (dy, dx) direction, path kind, speed factor of each class; rotation and scale classes stay in
# place.
_TRANSLATIONS = {
  0: ((0, 1), "on", 1.0),
  1: ((0, -1), "on", 1.0),
  2: ((1, 0), "on", 1.0),
  3: ((-1, 0), "on", 1.0),
  8: ((0, 1), "back", 1.0),
  9: ((0, -1), "back", 1.0),
  10: ((0, 1), "on", FAST),
  11: ((0, -1), "on", FAST),
}


@dataclasses.dataclass(frozen=True)
class SyntheticMotion:
  """Clips (T, S, S, 3) of `num_frames` frames of side `image_size`."""

  num_frames: int = 8
  image_size: int = 64
  seed: int = 0
  motion_scale: float = 1.0  # speed multiplier: 1 normal, 3 the fast-motion variant
  classes: tuple[int, ...] = tuple(range(len(CLASSES)))  # the motions used (indices into CLASSES)

  @property
  def class_names(self) -> tuple[str, ...]:
    return tuple(CLASSES[i] for i in self.classes)

  def __post_init__(self):
    if (
      not self.classes
      or len(set(self.classes)) != len(self.classes)
      or not set(self.classes) <= set(range(len(CLASSES)))
    ):
      raise ValueError(
        f"config.dataset.classes = {self.classes}: distinct indices into the {len(CLASSES)} "
        f"motions {CLASSES}"
      )
    if not 0 < self.motion_scale * STEP * FAST < 0.5:
      raise ValueError(
        f"config.dataset.motion_scale = {self.motion_scale}: use a value in (0, "
        f"{0.5 / (STEP * FAST):.1f}) "
        "(faster motion aliases on the wrapped frame)"
      )

  def path(self, label: int, rng: np.random.Generator):
    """Per frame: object centre (y, x) in [0, 1), rotation angle and size factor."""
    frames = self.num_frames
    s = np.arange(frames) - (frames - 1) / 2  # time, centred on the middle frame
    jitter = rng.uniform(0.8, 1.25)
    centre = rng.uniform(0, 1, size=2)
    angle = np.full(frames, rng.uniform(0, 2 * np.pi))
    size = np.ones(frames)
    offsets = np.zeros(frames)
    direction = (0, 0)
    if label in _TRANSLATIONS:
      direction, kind, speed = _TRANSLATIONS[label]
      step = STEP * self.motion_scale * jitter * speed
      offsets = step * (s if kind == "on" else (frames - 1) / 2 - np.abs(s))
    elif label in (4, 5):
      rate = 1 + GROWTH * self.motion_scale * jitter
      size = rate ** (s if label == 4 else -s)
    else:  # 6, 7: clockwise is a decreasing angle in (y down, x right) image coordinates
      angle = angle + (-1 if label == 6 else 1) * TURN * self.motion_scale * jitter * s
    centres = (centre[None] + offsets[:, None] * np.array(direction)[None]) % 1.0
    return centres, angle, size

  def clip(self, split: str, index: int, label: int | None = None) -> tuple[np.ndarray, int]:
    """The normalised clip (T, S, S, 3) float32 and its label (an index into `classes`); `label`
    replaces the drawn class and keeps everything else (appearance, start, speed) as it is."""
    if split not in SPLIT_SEEDS:
      raise ValueError(f"synthetic split must be one of {sorted(SPLIT_SEEDS)}, got {split!r}")
    rng = np.random.default_rng([self.seed, SPLIT_SEEDS[split], index])
    drawn = int(rng.integers(len(self.classes)))
    label = drawn if label is None else label
    motion = self.classes[label]
    size = self.image_size
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    background = _texture(rng, yy, xx)
    colour, frequency, phase, contrast = _pattern(rng)
    radius = rng.uniform(0.14, 0.2)
    shape = int(rng.integers(3))  # disk, square, bar
    centres, angles, scales = self.path(motion, rng)
    clip = np.empty((self.num_frames, size, size, 3), np.float32)
    for t, ((y, x), angle, scale) in enumerate(zip(centres, angles, scales)):
      dy, dx = (
        (yy - y + 0.5) % 1.0 - 0.5,
        (xx - x + 0.5) % 1.0 - 0.5,
      )  # wrapped offsets from the centre
      cos, sin = np.cos(angle), np.sin(angle)
      u, v = (cos * dy + sin * dx) / scale, (-sin * dy + cos * dx) / scale  # object coordinates
      if shape == 0:
        inside = u**2 + v**2 < radius**2
      elif shape == 1:
        inside = (np.abs(u) < radius) & (np.abs(v) < radius)
      else:
        inside = (np.abs(u) < 0.5 * radius) & (np.abs(v) < 1.4 * radius)
      foreground = _shade(
        colour, frequency, phase, contrast, u, v
      )  # the texture turns and grows with the object
      frame = np.where(inside[..., None], foreground, background)
      clip[t] = frame + rng.normal(0, 0.02, frame.shape)
    clip = np.clip(clip, 0.0, 1.0)
    return normalization.normalize(clip), label  # like real video, so the same model code applies

  def batch(self, split: str, indices) -> dict[str, np.ndarray]:
    clips, labels = zip(*(self.clip(split, int(i)) for i in indices))
    return {"clips": np.stack(clips), "labels": np.array(labels, np.int32)}


def _pattern(rng, cycles=(2, 4)):
  """Colour, frequency (cycles per image side, random orientation), phase and contrast."""
  colour = rng.uniform(0.1, 0.9, size=3).astype(np.float32)
  frequency = rng.uniform(*cycles, size=2) * rng.choice([-1, 1], size=2)
  return colour, frequency, rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.35)


def _shade(colour, frequency, phase, contrast, yy, xx) -> np.ndarray:
  """A colour modulated by a sinusoidal pattern over the coordinates, (S, S, 3) in [0, 1]."""
  pattern = 0.5 + 0.5 * np.sin(2 * np.pi * (frequency[0] * yy + frequency[1] * xx) + phase)
  return np.clip(colour[None, None] * (1 - contrast) + contrast * pattern[..., None], 0, 1).astype(
    np.float32
  )


def _texture(rng, yy, xx) -> np.ndarray:
  """A random low-frequency background, (S, S, 3) in [0, 1]."""
  colour, frequency, phase, contrast = _pattern(rng, cycles=(1, 5))
  return _shade(colour, frequency, phase, contrast * 0.6, yy, xx)
