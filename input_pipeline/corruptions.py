"""Corruptions of evaluation clips, for robustness tests: occlusion, motion blur, dropped frames
and noise, at severities 1 (mild) to 5 (strong).

Each works on RGB values in [0, 1] of one clip (T, H, W, 3): `corrupt_clips` undoes the
normalisation, corrupts and normalises again. What is random (where a patch lies, which frames
drop, the noise) is drawn from (seed, video id), so a clip is corrupted the same way in every
run, on every host and in every batch it lands in, and every view of a video alike.

  occlusion         a grey square of SEVERITY_AREA of the frame, in the same place in every frame
  moving_occlusion  the same square, moving in a straight line across the clip
  motion_blur       each frame the mean of itself and the `severity` frames before it (an
                    exposure that long): a moving object smears along its path
  dropped_frames    SEVERITY_DROPPED of the frames (never the first) repeat the frame before them
  gaussian_noise    independent noise of standard deviation SEVERITY_SIGMA, clipped to [0, 1]
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

import numpy as np

from input_pipeline import normalization

CORRUPTIONS = ("occlusion", "moving_occlusion", "motion_blur", "dropped_frames", "gaussian_noise")
SEVERITIES = (1, 2, 3, 4, 5)
SEVERITY_AREA = (0.05, 0.1, 0.2, 0.3, 0.4)  # occlusions: fraction of the frame covered
SEVERITY_DROPPED = (0.125, 0.25, 0.375, 0.5, 0.625)  # dropped_frames: fraction of the frames
SEVERITY_SIGMA = (0.04, 0.08, 0.12, 0.18, 0.26)  # gaussian_noise: std of RGB values in [0, 1]
GREY = 0.5


def check(name: str, severity: int) -> None:
  """Raises ValueError naming the config key when `name` or `severity` is not one we have."""
  if name not in CORRUPTIONS:
    raise ValueError(
      f"config.eval.corruption = {name!r} is unknown: use one of {CORRUPTIONS} (or '' for none)"
    )
  if severity not in SEVERITIES:
    raise ValueError(f"config.eval.severity = {severity!r} must be one of {SEVERITIES}")


def clip_rng(seed: int, video_id: str) -> np.random.Generator:
  """The generator of one video's corruption: a stable function of (seed, id) in any process."""
  return np.random.default_rng([seed, zlib.crc32(str(video_id).encode())])


def _square(height: int, width: int, area: float) -> int:
  return max(1, min(height, width, round(np.sqrt(area * height * width))))


def occlusion(
  clip: np.ndarray, severity: int, rng: np.random.Generator, moving: bool = False
) -> np.ndarray:
  frames, height, width, _ = clip.shape
  side = _square(height, width, SEVERITY_AREA[severity - 1])
  start = rng.integers(0, [height - side + 1, width - side + 1])
  end = rng.integers(0, [height - side + 1, width - side + 1]) if moving else start
  out = clip.copy()
  for t in range(frames):
    fraction = t / (frames - 1) if frames > 1 else 0.0
    y, x = np.round(start + (end - start) * fraction).astype(int)
    out[t, y : y + side, x : x + side] = GREY
  return out


def motion_blur(clip: np.ndarray, severity: int) -> np.ndarray:
  cumulative = np.concatenate([np.zeros_like(clip[:1]), np.cumsum(clip, axis=0, dtype=np.float64)])
  t = np.arange(len(clip))
  first = np.maximum(t - severity, 0)
  return ((cumulative[t + 1] - cumulative[first]) / (t + 1 - first)[:, None, None, None]).astype(
    clip.dtype
  )


def dropped_frames(clip: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
  frames = len(clip)
  count = min(frames - 1, max(1, round(SEVERITY_DROPPED[severity - 1] * frames)))
  dropped = set((1 + rng.permutation(frames - 1)[:count]).tolist())
  out = clip.copy()
  for t in range(1, frames):
    if t in dropped:
      out[t] = out[t - 1]
  return out


def gaussian_noise(clip: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
  noise = rng.normal(0.0, SEVERITY_SIGMA[severity - 1], clip.shape)
  return np.clip(clip + noise, 0.0, 1.0).astype(clip.dtype)


def corrupt_pixels(
  clip: np.ndarray, name: str, severity: int, rng: np.random.Generator
) -> np.ndarray:
  """One clip (T, H, W, 3) of RGB values in [0, 1], corrupted."""
  check(name, severity)
  if name in ("occlusion", "moving_occlusion"):
    return occlusion(clip, severity, rng, moving=name == "moving_occlusion")
  if name == "motion_blur":
    return motion_blur(clip, severity)
  if name == "dropped_frames":
    return dropped_frames(clip, severity, rng)
  return gaussian_noise(clip, severity, rng)


def corrupt_clips(
  clips: np.ndarray, ids: Iterable[str], name: str, severity: int, seed: int
) -> np.ndarray:
  """Clips (N, T, H, W, 3) or (N, views, T, H, W, 3), uint8 pixels or normalised float, one video
  id each, corrupted in the same form (pixels rounded, as a corrupted video file would hold
  them); every view of a video with the same draw."""
  pixels_in = clips.dtype == np.uint8
  out = np.empty_like(clips)
  for i, video_id in enumerate(ids):
    views = clips[i] if clips.ndim == 6 else clips[i][None]
    corrupted = []
    for view in views:
      pixels = (
        view / np.float32(255)
        if pixels_in
        else np.clip(view * normalization.STD + normalization.MEAN, 0.0, 1.0)
      )
      pixels = corrupt_pixels(pixels, name, severity, clip_rng(seed, video_id))
      corrupted.append(np.round(pixels * 255) if pixels_in else normalization.normalize(pixels))
    out[i] = np.stack(corrupted) if clips.ndim == 6 else corrupted[0]
  return out


def corrupt_batches(batches: Iterable[dict], name: str, severity: int, seed: int) -> Iterator[dict]:
  """Evaluation batches ({'clips', 'ids', ...}) with their clips corrupted."""
  for batch in batches:
    yield {**batch, "clips": corrupt_clips(batch["clips"], batch["ids"], name, severity, seed)}
