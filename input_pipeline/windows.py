"""Sliding windows over a long video: where they lie and their frames, read once, front to back.

A window is a span [start, end) of a video's frames that is sampled as one evaluation video is
(its TSN segments, or dense sampling). Windows of `length` frames start every `stride` frames; one
more window ends at the last frame when the stride does not land there, and a video shorter than
a window is one window. Video files are decoded once, front to back, keeping only the frames that
windows still to come will sample, so memory stays at a few windows' frames however long the
video is.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Iterator

import numpy as np

from input_pipeline import frames as frame_io


@dataclasses.dataclass(frozen=True)
class Window:
  start: int  # first frame, 0-based
  end: int  # one past the last frame
  indices: np.ndarray  # the frames it samples, 0-based in the video, (clips * T,)


def parse_span(text: str, fps: float | None, name: str) -> int:
  """ "64" (frames) or "2.5s" (seconds, at `fps`) -> a positive number of frames."""
  text = str(text).strip()
  try:
    if text.endswith("s"):
      if not fps:
        raise ValueError(
          f"--{name}={text} is in seconds, but the video's frame rate is unknown (a frame "
          "folder): give --fps, or the span in frames"
        )
      frames = round(float(text[:-1]) * fps)
    else:
      frames = int(text)
  except ValueError as e:
    if "--" in str(e):
      raise
    raise ValueError(f"--{name}={text}: give frames (64) or seconds (2.5s)") from None
  if frames < 1:
    raise ValueError(f"--{name}={text} is less than one frame")
  return frames


def spans(num_frames: int, length: int, stride: int) -> list[tuple[int, int]]:
  """The [start, end) of each window over a video of `num_frames` frames."""
  if num_frames <= length:
    return [(0, num_frames)]
  starts = list(range(0, num_frames - length + 1, stride))
  if starts[-1] + length < num_frames:
    starts.append(num_frames - length)
  return [(s, s + length) for s in starts]


def plan(
  num_frames: int, length: int | None, stride: int | None, sample: Callable[[int], np.ndarray]
) -> list[Window]:
  """Windows over the video (one over all of it when `length` is None); `sample(n)` gives the
  0-based frames an evaluation samples from n frames."""
  if length is None:
    return [Window(0, num_frames, np.asarray(sample(num_frames)).reshape(-1))]
  return [
    Window(s, e, s + np.asarray(sample(e - s)).reshape(-1))
    for s, e in spans(num_frames, length, stride or length)
  ]


@dataclasses.dataclass
class LongVideo:
  """A video file or a folder of frames, with its frame count and frame rate (None for a folder
  unless given)."""

  path: pathlib.Path
  frame_template: str = "{:05d}.jpg"
  fps: float | None = None

  def __post_init__(self):
    self.path = pathlib.Path(self.path)
    self.encoded = self.path.is_dir()
    if self.encoded:
      self._files = frame_io.frame_files(self.path, self.frame_template)
      self.num_frames = len(self._files)
    else:
      self.num_frames, rate = _count_frames(self.path)
      self.fps = self.fps or rate

  def read(self, windows: list[Window]) -> Iterator[tuple[Window, np.ndarray]]:
    """Each window with its sampled frames (JPEG bytes for a folder, else uint8 (k, H, W, 3)),
    in order."""
    if self.encoded:
      for window in windows:
        yield window, frame_io.read_jpegs([self._files[k] for k in window.indices])
      return
    yield from _decode_windows(self.path, windows)


def _count_frames(path: pathlib.Path) -> tuple[int, float | None]:
  """Frames of a video file (from its header, else by reading its packets) and its frame rate."""
  import av

  if not path.is_file():
    raise frame_io.UnreadableVideoError(f"{path}: no such video file")
  try:
    with av.open(str(path)) as container:
      if not container.streams.video:
        raise frame_io.UnreadableVideoError(f"{path}: has no video stream")
      stream = container.streams.video[0]
      rate = stream.average_rate or stream.guessed_rate
      count = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
  except av.error.FFmpegError as e:
    raise frame_io.UnreadableVideoError(f"{path}: cannot be decoded ({e})") from e
  if not count:
    raise frame_io.UnreadableVideoError(f"{path}: has no frames")
  return count, float(rate) if rate else None


def _decode_windows(
  path: pathlib.Path, windows: list[Window]
) -> Iterator[tuple[Window, np.ndarray]]:
  import av

  wanted = set(np.concatenate([w.indices for w in windows]).tolist())
  kept: dict[int, np.ndarray] = {}
  pending = list(windows)
  latest = None
  try:
    with av.open(str(path)) as container:
      for index, frame in enumerate(container.decode(video=0)):
        latest = frame.to_ndarray(format="rgb24")
        if index in wanted:
          kept[index] = latest
        while pending and index >= pending[0].indices.max():
          yield pending[0], np.stack([kept[k] for k in pending[0].indices])
          pending.pop(0)
          first_needed = min((w.indices.min() for w in pending), default=index + 1)
          kept = {k: v for k, v in kept.items() if k >= first_needed}
        if not pending:
          return
  except av.error.FFmpegError as e:
    if latest is None:
      raise frame_io.UnreadableVideoError(f"{path}: cannot be decoded ({e})") from e
  if latest is None:
    raise frame_io.UnreadableVideoError(f"{path}: has no frames")
  # The file ended before the frames its header counts (truncated): what the remaining windows
  # would sample past the end is the last frame that decoded.
  for window in pending:
    yield window, np.stack([kept.get(k, latest) for k in window.indices])
