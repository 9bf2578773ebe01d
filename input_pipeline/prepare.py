"""Turns a dataset in its official layout into TFRecord shards of JPEG frames (input_pipeline.records).

  python -m input_pipeline.prepare --dataset=ssv2 --data_dir=RAW --output_dir=OUT
  python main.py --config=configs/ssv2.py --config.dataset.data_dir=OUT --workdir=DIR

Videos are decoded with PyAV (frame folders read as they are), every frame is resized to
--resize_hw (the recipe's 240x320, so training decodes only its crop and resizes once) and stored
as JPEG. Shards are written in parallel, one process per core; a shard is written under a
temporary name and renamed when complete, so a killed run loses at most the shards in progress
and a rerun of the same command skips the finished ones. Unreadable, truncated or empty videos are
skipped and listed with the reason in OUT/skipped.txt. Exit status: 0 when every split holds
videos (even with some skipped), 1 when a split has nothing usable, 2 when the label files are
wrong or contradict each other, or OUT was prepared with other settings.
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import io
import json
import multiprocessing
import os
import pathlib
import signal
import sys
import threading
import time
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the workers inherit it: one progress bar, no banners

import numpy as np
from absl import flags, logging

from input_pipeline import frames as frame_io
from input_pipeline import records
from input_pipeline.labels import LabelFileError, Video
from stss_jax import cli
from stss_jax.files import write_json_atomically

DEFAULT_CLASSES = {"ssv1": 174, "ssv2": 174, "diving48": 48}

_progress = None  # the worker's queue of finished-video ticks, set by _init_worker


def convert(video: Video, frame_template: str, resize_hw: tuple[int, int] | None, quality: int) -> records.PreparedVideo:
  """Every frame of a video as JPEG bytes, resized to resize_hw (None keeps the size; frames of a
  folder are then copied byte for byte)."""
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
          size = image.size
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
  if resize_hw is not None:
    height, width = resize_hw
  elif video.path.is_dir():
    width, height = size
  else:
    height, width = decoded.shape[1:3]
  return records.PreparedVideo(video.video_id, video.label, jpegs, first_frame, height, width)


def _init_worker(progress, parent_pid: int | None = None) -> None:
  """Sets the worker's progress queue; a worker process also ends when its parent does."""
  global _progress
  _progress = progress
  if parent_pid is not None:
    _die_with(parent_pid)


def _die_with(parent_pid: int) -> None:
  """Ends this process when `parent_pid` ends, even by SIGKILL, so that no worker outlives a
  killed prepare: the kernel's parent-death signal on Linux, a watch on the parent elsewhere."""
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


def _skipped_path(shard: pathlib.Path) -> pathlib.Path:
  return shard.with_suffix(".skipped.json")


def write_one_shard(shard: pathlib.Path, videos: list[Video], frame_template: str, resize_hw, quality: int) -> int:
  """Converts and writes one shard, then its list of skipped videos, whose presence marks the
  shard finished."""
  skipped = []

  def converted():
    for video in videos:
      try:
        yield convert(video, frame_template, resize_hw, quality)
      except (frame_io.UnreadableVideoError, OSError, ValueError) as e:
        skipped.append({"id": video.video_id, "reason": str(e) if str(video.path) in str(e) else f"{video.path}: {e}"})
      finally:
        if _progress is not None:
          _progress.put(1)

  written = records.write_shard(shard, converted())
  write_json_atomically(_skipped_path(shard), skipped)
  return written


def check_consistent(splits: dict[str, list[Video]]) -> None:
  """Refuses a video listed twice with different labels, within a split or across splits."""
  seen: dict[str, tuple[str, int]] = {}
  for split, videos in splits.items():
    for video in videos:
      if video.video_id in seen and seen[video.video_id][1] != video.label:
        first_split, first_label = seen[video.video_id]
        raise LabelFileError(f"video {video.video_id} is labelled {first_label} in the {first_split} list and "
                             f"{video.label} in the {split} list")
      seen.setdefault(video.video_id, (split, video.label))
  both = set(v.video_id for v in splits["train"]) & set(v.video_id for v in splits["validation"])
  if both:
    logging.warning("%d videos are listed in both splits (e.g. %s)", len(both), sorted(both)[0])


def plan(splits: dict[str, list[Video]], videos_per_shard: int) -> list[tuple[str, int, int, list[Video]]]:
  """(split, shard index, shard count, videos) for every shard, in list order."""
  shards = []
  for split, videos in splits.items():
    count = max(1, -(-len(videos) // videos_per_shard))
    shards += [(split, i, count, videos[i * videos_per_shard:(i + 1) * videos_per_shard]) for i in range(count)]
  return shards


def prepare(dataset: str, data_dir: pathlib.Path, output_dir: pathlib.Path, *, num_classes: int,
            train_list: str = "", eval_list: str = "", class_names: str = "", strip_prefix: str = "",
            frame_template: str = "{:05d}.jpg", resize_hw=(240, 320), quality: int = 90,
            videos_per_shard: int = 128, workers: int | None = None) -> dict:
  """Writes OUT and returns its manifest; raises LabelFileError for wrong or contradictory label
  files, ValueError for other settings, RuntimeError when a split ends up empty."""
  from input_pipeline.sources import read_label_files

  if not data_dir.is_dir():
    raise ValueError(f"--data_dir={data_dir} is not a directory")
  train, evaluation, names = read_label_files(dataset, data_dir, num_classes, train_list, eval_list, class_names,
                                              strip_prefix)
  if names is not None and len(names) != num_classes:
    raise LabelFileError(f"the class list of {data_dir} names {len(names)} classes, --num_classes is {num_classes}")
  splits = {"train": train, "validation": evaluation}
  check_consistent(splits)
  output_dir.mkdir(parents=True, exist_ok=True)
  settings = {"dataset": dataset, "data_dir": str(data_dir.resolve()), "resize_hw": list(resize_hw) if resize_hw else None,
              "quality": quality, "videos_per_shard": videos_per_shard, "frame_template": frame_template,
              "videos": {split: len(videos) for split, videos in splits.items()}}
  settings_path = output_dir / "settings.json"
  if settings_path.exists() and json.loads(settings_path.read_text()) != settings:
    raise ValueError(f"{output_dir} was prepared with other settings ({settings_path}); use a new --output_dir")
  write_json_atomically(settings_path, settings)

  shards = plan(splits, videos_per_shard)
  todo = [s for s in shards if not _skipped_path(output_dir / records.shard_name(*s[:3])).exists()]
  total = sum(len(s[3]) for s in todo)
  print(f"{dataset}: {len(train)} training and {len(evaluation)} validation videos in {len(shards)} shards; "
        f"{len(shards) - len(todo)} already written, {total} videos to convert", flush=True)
  if todo:
    _run(todo, output_dir, frame_template, resize_hw, quality, total, workers or os.cpu_count() or 1)

  manifest = {"format_version": records.FORMAT_VERSION, "dataset": dataset,
              "class_names": names or [str(i) for i in range(num_classes)],
              "resize_hw": settings["resize_hw"], "splits": {}}
  skipped_lines = []
  for split in splits:
    names_of_split = [records.shard_name(*s[:3]) for s in shards if s[0] == split]
    written = 0
    for name in names_of_split:
      with np.load(records.index_path(output_dir / name)) as index:
        written += len(index["ids"])
      for entry in json.loads(_skipped_path(output_dir / name).read_text()):
        skipped_lines.append(f"{split}\t{entry['id']}\t{entry['reason']}")
    manifest["splits"][split] = {"shards": names_of_split, "videos": written,
                                 "skipped": len(splits[split]) - written}
  (output_dir / "skipped.txt").write_text("".join(line + "\n" for line in skipped_lines))
  empty = [split for split, info in manifest["splits"].items() if not info["videos"]]
  if empty:
    raise RuntimeError(f"no usable video in the {' and '.join(empty)} split; reasons in {output_dir / 'skipped.txt'}")
  write_json_atomically(output_dir / records.MANIFEST, manifest)
  return manifest


def _run(todo, output_dir, frame_template, resize_hw, quality, total, workers) -> None:
  from tqdm import tqdm

  with tqdm(total=total, unit="video", desc="prepare") as bar:
    if workers == 1 or len(todo) == 1:  # in this process: no worker to start
      _init_worker(types.SimpleNamespace(put=bar.update))
      try:
        for split, i, count, videos in todo:
          write_one_shard(output_dir / records.shard_name(split, i, count), videos, frame_template, resize_hw, quality)
      finally:
        _init_worker(None)
      return
    context = multiprocessing.get_context("spawn")  # TensorFlow is not fork-safe
    progress = context.Queue()  # no manager process: nothing but the workers to outlive a kill
    with concurrent.futures.ProcessPoolExecutor(min(workers, len(todo)), mp_context=context,
                                                initializer=_init_worker, initargs=(progress, os.getpid())) as pool:
      pending = {pool.submit(write_one_shard, output_dir / records.shard_name(split, i, count), videos,
                             frame_template, resize_hw, quality) for split, i, count, videos in todo}
      while pending:
        done, pending = concurrent.futures.wait(pending, timeout=0.5)
        while not progress.empty():
          bar.update(progress.get())
        for future in done:
          future.result()  # a worker's unexpected error stops the run here, finished shards kept
      while not progress.empty():
        bar.update(progress.get())


def _resize_flag(value: str):
  if value in ("", "0", "none"):
    return None
  try:
    height, width = (int(v) for v in value.split(","))
  except ValueError:
    raise ValueError(f"--resize_hw={value!r}: use HEIGHT,WIDTH (e.g. 240,320) or 0 to keep the frame size") from None
  if height < 1 or width < 1:
    raise ValueError(f"--resize_hw={value!r}: sides must be positive")
  return height, width


def define_flags(flag_values: flags.FlagValues, argv) -> None:
  del argv
  define = dict(flag_values=flag_values)
  flags.DEFINE_enum("dataset", None, ["list", "ssv1", "ssv2", "diving48", "finegym"], "Layout of --data_dir.", **define)
  flags.DEFINE_string("data_dir", None, "The dataset in its official layout.", **define)
  flags.DEFINE_string("output_dir", None, "Where the shards go.", **define)
  flags.DEFINE_integer("num_classes", 0, "Classes; defaults: ssv1/ssv2 174, diving48 48 (needed for list, finegym).",
                       **define)
  flags.DEFINE_string("train_list", "", "list/finegym: training list file, relative to --data_dir.", **define)
  flags.DEFINE_string("eval_list", "", "list/finegym: evaluation list file, relative to --data_dir.", **define)
  flags.DEFINE_string("class_names", "", "list: optional file of class names, one a line.", **define)
  flags.DEFINE_string("strip_prefix", "", "list: prefix removed from listed paths.", **define)
  flags.DEFINE_string("frame_template", "{:05d}.jpg", "Frame file names in frame folders, numbered from 1.", **define)
  flags.DEFINE_string("resize_hw", "240,320", "HEIGHT,WIDTH every frame is stored at; 0 keeps the frames' size.",
                      **define)
  flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality of stored frames.", lower_bound=1, upper_bound=100, **define)
  flags.DEFINE_integer("videos_per_shard", 128, "Videos per TFRecord shard.", lower_bound=1, **define)
  flags.DEFINE_integer("workers", 0, "Processes; 0 means one per core.", lower_bound=0, **define)
  flags.mark_flags_as_required(["dataset", "data_dir", "output_dir"], flag_values=flag_values)


def run(flag_values: flags.FlagValues) -> int:
  num_classes = flag_values.num_classes or DEFAULT_CLASSES.get(flag_values.dataset)
  if not num_classes:
    raise ValueError(f"--num_classes is needed for --dataset={flag_values.dataset}")
  manifest = prepare(
      flag_values.dataset, pathlib.Path(flag_values.data_dir), pathlib.Path(flag_values.output_dir),
      num_classes=num_classes, train_list=flag_values.train_list, eval_list=flag_values.eval_list,
      class_names=flag_values.class_names, strip_prefix=flag_values.strip_prefix,
      frame_template=flag_values.frame_template, resize_hw=_resize_flag(flag_values.resize_hw),
      quality=flag_values.jpeg_quality, videos_per_shard=flag_values.videos_per_shard, workers=flag_values.workers)
  for split, info in manifest["splits"].items():
    print(f"{split}: {info['videos']} videos written, {info['skipped']} skipped")
  print(f"wrote {flag_values.output_dir}; train with --config.dataset.data_dir={flag_values.output_dir}")
  return 0


def main(argv=None) -> int:
  # Exit 2: the label files or settings are wrong; 1: a split has no usable video.
  return cli.main(__doc__, define_flags, run, argv, errors={LabelFileError: 2, ValueError: 2, FileNotFoundError: 2,
                                                            RuntimeError: 1})


if __name__ == "__main__":
  sys.exit(main())
