"""Reading frames: decoded from video files with PyAV, or read as JPEG bytes from frame folders.

Errors name the video and what is wrong with it, so that the prepare tool can list the videos it
skips and why.
"""

from __future__ import annotations

import contextlib
import os
import pathlib

import numpy as np
from etils import epath

from input_pipeline.labels import data_path
from stss_jax import storage


class UnreadableVideoError(ValueError):
  """A video that cannot be used: missing, corrupt, truncated to nothing or empty."""


def decode_video(
  path: pathlib.Path, start_frame: int = 0, end_frame: int | None = None
) -> np.ndarray:
  """All frames [start_frame, end_frame) of a video file as uint8 (N, H, W, 3) RGB."""
  import av  # PyAV, imported here so that reading frame folders does not need it

  path = epath.Path(path)
  if not path.is_file():
    raise UnreadableVideoError(f"{path}: no such video file")
  frames = []
  try:
    with open_file(path) as file, av.open(file) as container:
      if not container.streams.video:
        raise UnreadableVideoError(f"{path}: has no video stream")
      for index, frame in enumerate(container.decode(video=0)):
        if end_frame is not None and index >= end_frame:
          break
        if index >= start_frame:
          frames.append(frame.to_ndarray(format="rgb24"))
  except av.error.FFmpegError as e:
    if not frames:
      raise UnreadableVideoError(f"{path}: cannot be decoded ({e})") from e
    # A truncated file: keep the frames decoded before the damage.
  if not frames:
    raise UnreadableVideoError(f"{path}: no frames in [{start_frame}, {end_frame})")
  return np.stack(frames)


@contextlib.contextmanager
def open_file(path: epath.Path):
  """A local file by its name (so that FFmpeg and PIL read it themselves), a cloud object (gs://)
  as a file object of the path library."""
  if storage.is_local(path):
    yield str(path)
    return
  with path.open("rb") as file:
    yield file


def frame_files(
  folder: pathlib.Path, template: str = "{:05d}.jpg", first: int = 1
) -> list[pathlib.Path]:
  """The frame files of a folder, numbered from `first` without gaps; an error names a gap.
  Local folders are listed and joined with the standard library (the path library's objects
  cost a visible share of a training clip's time in benchmarks.input_pipeline), cloud ones through
  epath."""
  folder = data_path(folder)
  if not folder.is_dir():
    raise UnreadableVideoError(f"{folder}: no such frame folder")
  present = (
    set(os.listdir(folder)) if storage.is_local(folder) else {p.name for p in folder.iterdir()}
  )
  files = []
  number = first
  while template.format(number) in present:
    files.append(folder / template.format(number))
    number += 1
  if not files:
    raise UnreadableVideoError(f"{folder}: no frame named {template.format(first)}")
  if len(present) > len(files):
    later = [
      name
      for name in present
      if name != template.format(number) and _number_of(name, template) > number
    ]
    if later:
      raise UnreadableVideoError(
        f"{folder}: frame {template.format(number)} is missing before {min(later)}"
      )
  return files


def _number_of(name: str, template: str) -> int:
  prefix, _, suffix = template.partition("{")
  suffix = suffix.partition("}")[2]
  core = (
    name[len(prefix) : len(name) - len(suffix)]
    if name.startswith(prefix) and name.endswith(suffix)
    else ""
  )
  return int(core) if core.isdigit() else -1


def read_jpegs(files: list[pathlib.Path]) -> np.ndarray:
  """The bytes of JPEG frame files, to be decoded by the tf.data graph; a missing file or one
  that does not start and end like a JPEG (a truncated copy, say) is named in the error."""
  frames = []
  for path in files:
    try:
      data = data_path(path).read_bytes()
    except OSError as e:
      raise UnreadableVideoError(f"{path}: unreadable frame ({e})") from e
    if not data.startswith(b"\xff\xd8") or b"\xff\xd9" not in data[-64:]:
      raise UnreadableVideoError(f"{path}: not a complete JPEG file")
    frames.append(data)
  return np.array(frames, dtype=object)
