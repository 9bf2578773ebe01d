"""A video's frames as JPEG bytes at a chosen size: the unit of work of the dataset builders.

Frame folders are read as they are (their JPEGs copied byte for byte when no resize is asked),
video files are decoded with PyAV. Conversion runs in worker processes started with `spawn`
(TensorFlow is not fork-safe); each worker ends with its parent, even when the parent is killed
with SIGKILL, so that no worker outlives a killed build.
"""
from __future__ import annotations

import ctypes
import dataclasses
import io
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence

from input_pipeline import frames as frame_io
from input_pipeline.labels import Video


@dataclasses.dataclass(frozen=True)
class ConvertedVideo:
  video_id: str
  label: int
  frames: Sequence[bytes]  # JPEG bytes, one per frame, in order
  first_frame: int  # index of frames[0] in the source video (Diving-48 clips start inside theirs)
  height: int
  width: int


def convert(video: Video, frame_template: str, resize_hw: tuple[int, int] | None, quality: int) -> ConvertedVideo:
  """Every frame of a video as JPEG bytes, resized to resize_hw (None keeps the size; frames of a
  folder are then copied byte for byte). Raises UnreadableVideoError naming the video."""
  from PIL import Image

  def encoded(image: Image.Image) -> bytes:
    if resize_hw is not None and image.size != (resize_hw[1], resize_hw[0]):
      image = image.resize((resize_hw[1], resize_hw[0]), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()

  first_frame = 0
  if video.path.is_dir():
    files = frame_io.frame_files(video.path, frame_template)
    try:
      if resize_hw is None:
        jpegs = list(frame_io.read_jpegs(files))
        with Image.open(files[0]) as image:
          width, height = image.size
      else:
        jpegs = []
        for path in files:
          with Image.open(path) as image:
            jpegs.append(encoded(image.convert("RGB")))
    except OSError as e:
      raise frame_io.UnreadableVideoError(f"{video.path}: unreadable frame ({e})") from e
  else:
    decoded = frame_io.decode_video(video.path, video.start_frame or 0, video.end_frame)
    first_frame = video.start_frame or 0
    jpegs = [encoded(Image.fromarray(frame)) for frame in decoded]
    height, width = decoded.shape[1:3]
  if resize_hw is not None:
    height, width = resize_hw
  return ConvertedVideo(video.video_id, video.label, jpegs, first_frame, height, width)


def convert_or_reason(video: Video, frame_template: str, resize_hw, quality: int) -> ConvertedVideo | str:
  """convert(), or the reason the video cannot be used, naming its path."""
  try:
    return convert(video, frame_template, resize_hw, quality)
  except (frame_io.UnreadableVideoError, OSError, ValueError) as e:
    return str(e) if str(video.path) in str(e) else f"{video.path}: {e}"


def converted(videos: Sequence[Video], frame_template: str, resize_hw, quality: int,
              workers: int) -> Iterator[ConvertedVideo | str]:
  """convert_or_reason() of every video, in order, over `workers` processes (1: in this one)."""
  arguments = [(video, frame_template, resize_hw, quality) for video in videos]
  if workers <= 1 or len(videos) <= 1:
    for args in arguments:
      yield convert_or_reason(*args)
    return
  context = multiprocessing.get_context("spawn")
  with context.Pool(min(workers, len(videos)), initializer=die_with, initargs=(os.getpid(),)) as pool:
    yield from pool.imap(_convert_or_reason_star, arguments, chunksize=4)


def _convert_or_reason_star(args) -> ConvertedVideo | str:
  return convert_or_reason(*args)


def die_with(parent_pid: int) -> None:
  """Ends this process when `parent_pid` ends, even by SIGKILL: the kernel's parent-death signal
  on Linux, a watch on the parent elsewhere."""
  if sys.platform.startswith("linux"):
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
  else:
    def watch():
      while os.getppid() == parent_pid:
        time.sleep(0.5)
      os._exit(1)
    threading.Thread(target=watch, daemon=True).start()
  if os.getppid() != parent_pid:  # the parent died before the guard was set
    os._exit(1)

