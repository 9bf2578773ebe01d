"""Training-clip throughput of the input pipeline on this machine's CPU cores.

  python -m benchmarks.input_pipeline [--videos=48] [--clips=192]
  [--output=benchmarks/results/input_pipeline.md]

Writes frame folders of generated videos (textured backgrounds, a moving object, ~50 frames as in
SSv1/SSv2) at two frame sizes, SSv1's 100x176 and SSv2's 240x427, then times 8-frame 224x224
training clips (TSN sampling, resize to 240x320, multi-scale crop, flip) from:
  reference  PIL per frame, the way the official code loads and augments (GroupMultiScaleCrop
             etc. restated, normalised to float32 on the CPU as its DataLoader workers do), one
             worker process per core as a PyTorch DataLoader would run it;
  raw        our tf.data pipeline reading the frame folders directly;
  prepared   our tf.data pipeline reading the TFDS build of `python -m input_pipeline.prepare`
             (ArrayRecord, frames stored at 240x320: only the crop is decoded, one resize);
  and both again with config.input.resize_on_accelerator, where clips end at the crop's window
             (from raw frames: at the region of the frames, both resizes left to the step), and
             the train step resizes them (not timed here).
Ours give uint8 clips, normalised later by the training step on the accelerator. Beside them: the
per-clip Python of ours, and JPEG decoding alone in one thread (the ceiling of a core's clips/s).
Figures are clips per second per core: total clips/s over os.cpu_count(). Each is the median of
--repeats timed runs of --clips clips after a warm-up run; every run draws new clips.
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import pathlib
import platform
import statistics
import tempfile
import time

import numpy as np

from benchmarks import timing
from input_pipeline import sampling
from input_pipeline.crop_sizes import MAX_DISTORT, SCALES
from input_pipeline.normalization import MEAN, STD

FRAME_SIZES = {"SSv1 100x176": (100, 176), "SSv2 240x427": (240, 427)}
FRAMES_PER_VIDEO = 50  # the mean of the official SSv1 / SSv2 lists is 49-50
NUM_FRAMES, OUT_SIZE, RESIZE_HW = 8, 224, (240, 320)


def write_videos(root: pathlib.Path, count: int, size: tuple[int, int]) -> list[str]:
  """SSv1-layout frame folders and label files; returns the class names."""
  from PIL import Image

  rng = np.random.default_rng(0)
  height, width = size
  classes = ["left", "right"]
  root.mkdir(parents=True, exist_ok=True)
  (root / "something-something-v1-labels.csv").write_text("\n".join(classes) + "\n")
  rows = []
  for i in range(count):
    coarse = rng.uniform(0, 255, (height // 16 + 1, width // 16 + 1, 3)).astype(np.uint8)
    background = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC)).astype(
      np.int16
    )
    folder = root / "20bn-something-something-v1" / f"v{i}"
    folder.mkdir(parents=True)
    for t in range(FRAMES_PER_VIDEO):
      frame = background + rng.integers(-12, 12, background.shape)  # sensor-like grain
      x = int((width - 40) * t / FRAMES_PER_VIDEO)
      frame[height // 3 : height // 3 + 30, x : x + 40] = (220, 60, 40)
      Image.fromarray(np.clip(frame, 0, 255).astype(np.uint8)).save(
        folder / f"{t + 1:05d}.jpg", quality=90
      )
    rows.append(f"v{i};{classes[i % 2]}")
  for split in ("train", "validation"):
    (root / f"something-something-v1-{split}.csv").write_text("\n".join(rows) + "\n")
  return classes


def reference_clip(args) -> np.ndarray:
  """One training clip the official way: PIL opens every sampled frame, the group transforms crop,
  resize and flip each frame, then the clip is normalised (restated from TSN/TSM's transforms)."""
  from PIL import Image

  folder, seed = args
  rng = np.random.default_rng(seed)
  indices = sampling.train_indices(FRAMES_PER_VIDEO, NUM_FRAMES, rng)
  images = [
    Image.open(folder / f"{k + 1:05d}.jpg").convert("RGB").resize(RESIZE_HW[::-1], Image.BILINEAR)
    for k in indices
  ]
  height, width = RESIZE_HW
  sides = [int(min(height, width) * s) for s in SCALES]
  pairs = [
    (w, h) for i, w in enumerate(sides) for j, h in enumerate(sides) if abs(i - j) <= MAX_DISTORT
  ]
  crop_w, crop_h = pairs[rng.integers(len(pairs))]
  w_step, h_step = (width - crop_w) // 4, (height - crop_h) // 4
  lattice = [
    (0, 0),
    (0, 4),
    (4, 0),
    (4, 4),
    (2, 2),
    (2, 0),
    (2, 4),
    (4, 2),
    (0, 2),
    (1, 1),
    (1, 3),
    (3, 1),
    (3, 3),
  ]
  y, x = lattice[rng.integers(len(lattice))]
  box = (x * w_step, y * h_step, x * w_step + crop_w, y * h_step + crop_h)
  flip = rng.random() < 0.5
  frames = []
  for image in images:
    image = image.crop(box).resize((OUT_SIZE, OUT_SIZE), Image.BILINEAR)
    if flip:
      image = image.transpose(Image.FLIP_LEFT_RIGHT)
    frames.append(np.asarray(image, np.float32) / 255.0)
  return (np.stack(frames) - np.array(MEAN, np.float32)) / np.array(STD, np.float32)


def time_reference(root: pathlib.Path, clips: int, repeats: int, workers: int) -> float:
  folders = sorted((root / "20bn-something-something-v1").iterdir())
  rates = []
  # Fresh interpreters, as a DataLoader's workers with glibc's malloc defaults: a fork would inherit
  # what input_pipeline.allocator set in this process.
  with multiprocessing.get_context("spawn").Pool(workers) as pool:
    for run in range(repeats + 1):
      jobs = [(folders[i % len(folders)], run * clips + i) for i in range(clips)]
      start = time.perf_counter()
      for _ in pool.imap_unordered(reference_clip, jobs, chunksize=4):
        pass
      if run:  # run 0 warms up
        rates.append(clips / (time.perf_counter() - start))
  return statistics.median(rates)


def time_ours(
  data_dir: pathlib.Path, clips: int, repeats: int, resize_on_accelerator: bool = False
) -> float:
  """resize_on_accelerator: clips end at the crop's window (the train step resizes and flips
  them)."""
  from configs import ssv1
  from input_pipeline import sources

  config = ssv1.get_config()
  config.dataset.data_dir, config.dataset.num_classes, config.dataset.no_flip_labels = (
    str(data_dir),
    2,
    (),
  )
  config.input.resize_on_accelerator = resize_on_accelerator
  batch = 8
  stream = sources.build_source(config).train_iterator(0, batch)
  rates = []
  for run in range(repeats + 1):
    start = time.perf_counter()
    for _ in range(clips // batch):
      next(stream)["clips"].shape  # noqa: B018  (the batch is materialised by the iterator)
    if run:
      rates.append(clips / (time.perf_counter() - start))
  return statistics.median(rates)


def time_python_part(data_dir: pathlib.Path, clips: int) -> tuple[float, float]:
  """Milliseconds per clip of the per-clip Python (reading and sampling a video) in one thread,
  and the speedup two threads give: tf.data runs it under the GIL, so 1000 / (ms x the share
  that does not overlap) caps one process's clips/s however many cores it has."""
  import threading

  from configs import ssv1
  from input_pipeline import sources

  config = ssv1.get_config()
  config.dataset.data_dir, config.dataset.num_classes, config.dataset.no_flip_labels = (
    str(data_dir),
    2,
    (),
  )
  source = sources.build_source(config)
  for position in range(clips // 4):  # warm-up: files opened, pages cached
    source.train_example(position)
  start = time.perf_counter()
  for position in range(clips):
    source.train_example(position)
  one = (time.perf_counter() - start) / clips

  def work(first):
    for position in range(first, first + clips // 2):
      source.train_example(position)

  threads = [threading.Thread(target=work, args=(first,)) for first in (clips, 2 * clips)]
  start = time.perf_counter()
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  return one * 1e3, one / ((time.perf_counter() - start) / clips)


def time_decode(data_dir: pathlib.Path, kind: str, clips: int) -> float:
  """Milliseconds per clip of JPEG decoding alone, in one thread: the 8 sampled frames decoded
  whole from a raw frame folder, or decoded inside an official multi-scale crop from the build (as
  ours do). 1000 / ms bounds what one core of our pipeline can give."""
  import tensorflow as tf

  from input_pipeline import tfds_source, transforms

  rng = np.random.default_rng(0)
  if kind == "raw":
    folders = sorted((data_dir / "20bn-something-something-v1").iterdir())
    jobs = [
      (
        [
          (folders[i % len(folders)] / f"{k + 1:05d}.jpg").read_bytes()
          for k in sampling.train_indices(FRAMES_PER_VIDEO, NUM_FRAMES, rng)
        ],
        None,
      )
      for i in range(clips)
    ]
    decode = lambda jpeg, _: tf.io.decode_jpeg(jpeg, channels=3)  # noqa: E731
  else:
    split = tfds_source.TfdsSplit(tfds_source.find(str(data_dir), "ssv1"), "train")
    jobs = [
      (
        split.read(i % len(split), lambda n: sampling.train_indices(n, NUM_FRAMES, rng))[0],
        transforms.multi_scale_box(tf.constant([i, 0]), *RESIZE_HW),
      )
      for i in range(clips)
    ]
    decode = lambda jpeg, box: tf.io.decode_and_crop_jpeg(jpeg, box, channels=3)  # noqa: E731

  def decode_clip(frames, box):
    for jpeg in frames:
      decode(jpeg, box)

  for job in jobs[: clips // 4]:  # warm-up
    decode_clip(*job)
  start = time.perf_counter()
  for job in jobs:
    decode_clip(*job)
  return (time.perf_counter() - start) / clips * 1e3


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--videos", type=int, default=48)
  parser.add_argument("--clips", type=int, default=192)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--output", default="")
  args = parser.parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from input_pipeline.prepare import prepare

  cores = os.cpu_count() or 1
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for name, size in FRAME_SIZES.items():
      root = pathlib.Path(tmp) / name.split()[0]
      write_videos(root / "raw", args.videos, size)
      prepare("ssv1", str(root / "raw"), str(root / "prepared"), resize_hw=RESIZE_HW)
      reference = time_reference(root / "raw", args.clips, args.repeats, cores) / cores
      raw = time_ours(root / "raw", args.clips, args.repeats) / cores
      prepared = time_ours(root / "prepared", args.clips, args.repeats) / cores
      deferred = [
        time_ours(root / kind, args.clips, args.repeats, resize_on_accelerator=True) / cores
        for kind in ("raw", "prepared")
      ]
      python = [time_python_part(root / kind, 2 * args.clips) for kind in ("raw", "prepared")]
      decode = [time_decode(root / kind, kind, args.clips) for kind in ("raw", "prepared")]
      rows.append((name, reference, raw, prepared, deferred, python, decode))
      print(
        f"{name}: reference {reference:.1f}, raw {raw:.1f} ({raw / reference:.2f}x), "
        f"prepared {prepared:.1f} ({prepared / reference:.2f}x) clips/s per core; with the last "
        "resize on the "
        f"accelerator raw {deferred[0]:.1f}, prepared {deferred[1]:.1f}; per-clip Python "
        f"{python[0][0]:.2f} ms raw (x{python[0][1]:.2f} on two threads), {python[1][0]:.2f} ms "
        "prepared "
        f"(x{python[1][1]:.2f}); JPEG decoding alone {decode[0]:.2f} ms raw, {decode[1]:.2f} ms "
        "prepared",
        flush=True,
      )
  if args.output:
    import PIL
    import tensorflow as tf

    cpu = timing.cpu_name()
    lines = [
      "# Input pipeline: 8x224x224 training clips per second per CPU core",
      "",
      "Beside each of ours, its ratio to the reference of the same run: a shared machine's speed "
      "drifts between "
      "spells (on the project's 2-core machine the reference by up to 2.3x between days), and ours "
      "does not "
      "drift by the same factor.",
      "",
      f"{datetime.date.today()}, {cores} cores ({cpu}), Python {platform.python_version()}, "
      f"tensorflow {tf.__version__}, Pillow {PIL.__version__}.",
      "",
      f"Command: `python -m benchmarks.input_pipeline --videos={args.videos} --clips={args.clips} "
      f"--repeats={args.repeats}`. Median of {args.repeats} runs of {args.clips} clips after a "
      "warm-up run; "
      f"{args.videos} generated videos of {FRAMES_PER_VIDEO} JPEG frames (quality 90) per frame "
      "size.",
      "",
      "| frames | reference (PIL per frame) | raw frame folders | prepared (TFDS ArrayRecord) "
      "| raw, both resizes on the accelerator | prepared, its resize on the accelerator |",
      "|---|---|---|---|---|---|",
    ]
    for name, reference, raw, prepared, deferred, *_ in rows:
      ours = " | ".join(
        f"{rate:.1f} ({rate / reference:.2f}x)" for rate in (raw, prepared, *deferred)
      )
      lines.append(f"| {name} | {reference:.1f} | {ours} |")
    lines += [
      "",
      "The per-clip Python (reading and sampling a video, under the GIL in tf.data): ms per clip "
      "in "
      "one thread, and the speedup of two threads (below 2: part of it holds the GIL, which caps "
      "one "
      "process's clips/s whatever its cores).",
      "",
      "| frames | raw: ms (two threads) | prepared: ms (two threads) |",
      "|---|---|---|",
    ]
    for name, *_, ((raw_ms, raw_x), (prepared_ms, prepared_x)), _ in rows:
      lines.append(
        f"| {name} | {raw_ms:.2f} (x{raw_x:.2f}) | {prepared_ms:.2f} (x{prepared_x:.2f}) |"
      )
    lines += [
      "",
      "JPEG decoding alone, one thread: ms per clip of its 8 frames (raw: whole frames; prepared: "
      "inside the clip's crop), and the clips/s per core that decoding alone allows (1000 / ms).",
      "",
      "| frames | raw: ms (ceiling) | prepared: ms (ceiling) |",
      "|---|---|---|",
    ]
    for name, *_, (raw_ms, prepared_ms) in rows:
      lines.append(
        f"| {name} | {raw_ms:.2f} ({1000 / raw_ms:.0f}) | {prepared_ms:.2f} "
        f"({1000 / prepared_ms:.0f}) |"
      )
    pathlib.Path(args.output).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
  main()
