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
import pickle
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence

from etils import epath

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


def convert(
  video: Video, frame_template: str, resize_hw: tuple[int, int] | None, quality: int
) -> ConvertedVideo:
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
        with frame_io.open_file(files[0]) as file, Image.open(file) as image:
          width, height = image.size
      else:
        jpegs = []
        for path in files:
          with frame_io.open_file(path) as file, Image.open(file) as image:
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


def convert_or_reason(
  video: Video, frame_template: str, resize_hw, quality: int
) -> ConvertedVideo | str:
  """convert(), or the reason the video cannot be used, naming its path."""
  try:
    return convert(video, frame_template, resize_hw, quality)
  except (frame_io.UnreadableVideoError, OSError, ValueError) as e:
    return str(e) if str(video.path) in str(e) else f"{video.path}: {e}"


def converted(
  videos: Sequence[Video],
  frame_template: str,
  resize_hw,
  quality: int,
  workers: int,
  kept_in: epath.Path | None = None,
) -> Iterator[ConvertedVideo | str]:
  """convert_or_reason() of every video, in order, over `workers` processes (1: in this one).

  With `kept_in`, each result is also written there (NNNNNNN.pkl for the n-th video, atomically),
  and a video whose result is already there is read back instead of converted: a rerun after a
  killed build converts only what the killed one had not. The folder must be this list's and these
  settings' alone (the builders name it after a digest of both)."""

  def kept(index: int) -> epath.Path:
    return kept_in / f"{index:07d}.pkl"

  done = set()
  if kept_in is not None:
    kept_in.mkdir(parents=True, exist_ok=True)
    done = {int(p.stem) for p in kept_in.glob("*.pkl") if p.stem.isdigit()}
  todo = [i for i in range(len(videos)) if i not in done]
  fresh = _converted([(videos[i], frame_template, resize_hw, quality) for i in todo], workers)
  for index in range(len(videos)):
    if index in done:
      yield pickle.loads(kept(index).read_bytes())
      continue
    result = next(fresh)
    if kept_in is not None:
      temporary = kept_in / f".{index:07d}.{os.getpid()}.tmp"
      temporary.write_bytes(pickle.dumps(result))
      temporary.replace(kept(index))
    yield result


def _converted(arguments: list[tuple], workers: int) -> Iterator[ConvertedVideo | str]:
  if workers <= 1 or len(arguments) <= 1:
    for args in arguments:
      yield convert_or_reason(*args)
    return
  context = multiprocessing.get_context("spawn")
  with context.Pool(
    min(workers, len(arguments)), initializer=die_with, initargs=(os.getpid(),)
  ) as pool:
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
