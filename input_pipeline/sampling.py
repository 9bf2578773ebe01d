"""Which frames of a video make a clip: TSN segment sampling and dense sampling.

All indices are 0-based positions in the video (frame files numbered from 1 are index + 1).
The official code (TSN/TSM) is followed where the video has at least as many frames as the clip;
for shorter videos it takes frame 1 for every segment, which throws the video's motion away.
Here a short video is stretched instead: segment k shows frame floor(k * n / T), so every frame
appears, in order, each about T / n times.
"""

from __future__ import annotations

import numpy as np

DENSE_SPAN = 64  # frames a dense clip spans, as in TSM's dense sampling


def _stretched(num_frames: int, num_segments: int) -> np.ndarray:
  return (np.arange(num_segments) * num_frames) // num_segments


def _check(num_frames: int, num_segments: int) -> None:
  if num_frames < 1:
    raise ValueError(f"a video needs at least one frame, got num_frames={num_frames}")
  if num_segments < 1:
    raise ValueError(f"num_segments must be >= 1, got {num_segments}")


def train_indices(num_frames: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
  """TSN training: T equal segments, one random frame in each."""
  _check(num_frames, num_segments)
  duration = num_frames // num_segments
  if duration == 0:
    return _stretched(num_frames, num_segments)
  return np.arange(num_segments) * duration + rng.integers(0, duration, size=num_segments)


def eval_indices(num_frames: int, num_segments: int, num_clips: int = 1) -> np.ndarray:
  """TSN evaluation: the centre frame of each segment, int(tick / 2 + tick * k), tick = n / T.

  With `num_clips` > 1 (multi-view testing), clip c takes int(tick * (c + 0.5) / C + tick * k),
  which is the centre formula for C = 1. Returns (num_clips, T).
  """
  _check(num_frames, num_segments)
  if num_frames < num_segments:
    return np.tile(_stretched(num_frames, num_segments), (num_clips, 1))
  tick = num_frames / num_segments
  return np.array(
    [
      [int(tick * (c + 0.5) / num_clips + tick * k) for k in range(num_segments)]
      for c in range(num_clips)
    ]
  )


def dense_indices(
  num_frames: int, num_segments: int, rng: np.random.Generator | None
) -> np.ndarray:
  """TSM dense sampling: T frames at a stride of 64 // T from a start drawn at random (training)
  or centred (rng None), wrapping around videos shorter than 64 frames."""
  _check(num_frames, num_segments)
  stride = max(1, DENSE_SPAN // num_segments)
  last_start = max(0, num_frames - DENSE_SPAN)
  start = last_start // 2 if rng is None else int(rng.integers(0, last_start + 1))
  return (np.arange(num_segments) * stride + start) % num_frames
