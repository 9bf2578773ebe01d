"""TFDS builders for the video datasets: every frame stored as JPEG at the training resize size.

  python -m input_pipeline.prepare --dataset=ssv2 --manual_dir=RAW   # runs the builder

| dataset.name | TFDS name | configs (the first is the default) |
| ssv1 | something_something_v1 | 240x320 |
| ssv2 | something_something_v2 | 240x320 |
| diving48 | diving48 | 240x320 |
| finegym | finegym | gym99_240x320, gym288_240x320 (the list files' names are the release's) |
| list | video_list | none built in: python -m input_pipeline.prepare --dataset=list ... |

A builder reads the official download from the manual dir (the layouts of docs/datasets.md),
converts the videos in parallel over the cores (input_pipeline.conversion) and writes ArrayRecord
files, which `tfds.data_source` reads by record. Shuffling is off: record i of a split is the i-th
usable video of its label file. Features: `video_id`, `label` (a ClassLabel with the dataset's
class names), `frames` (a Video of JPEG frames), `first_frame` (index of frames[0] in the
source video) and `num_frames`. The dataset info's metadata holds, per split, the ids, labels,
frame counts and first frames of the records, so that a reader knows them without opening a
record, and the videos that were skipped with the reason (unreadable, truncated, empty).
TFDS writes into a temporary directory and renames it when complete: a killed build leaves no
dataset that looks whole. TFDS cannot resume a build, but the conversions (decoding and JPEG
encoding, nearly all of a build's time) can: each video's result is kept in
DOWNLOAD_DIR/stss_jax_conversions/ (by default DATA_DIR/downloads/) until the build completes, so
that a rerun reads back what a killed build converted and converts only the rest, then writes the
records again. Meanwhile those files take about as much room as the build itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from input_pipeline import conversion
from input_pipeline.labels import Video

SPLITS = ("train", "validation")
# Under the TFDS download dir: each video's conversion, kept until the build completes, so that a
# rerun after a killed build converts only the rest.
CONVERSIONS = "stss_jax_conversions"
DATASET_VERSION = "1.0.0"
# dataset.name -> TFDS builder name
TFDS_NAMES = {
  "ssv1": "something_something_v1",
  "ssv2": "something_something_v2",
  "diving48": "diving48",
  "finegym": "finegym",
  "list": "video_list",
}
FINEGYM_LISTS = {
  99: ("gym99_train_element_v1.1.txt", "gym99_val_element.txt"),
  288: ("gym288_train_element_v1.1.txt", "gym288_val_element.txt"),
}


@dataclasses.dataclass(kw_only=True)
class VideoConfig(tfds.core.BuilderConfig):
  """How a dataset is read from its manual dir and stored."""

  num_classes: int = 0  # 0: as many as the dataset's class list names (SSv1, SSv2)
  resize_hw: tuple[int, int] | None = (
    240,
    320,
  )  # every frame is stored at (height, width); None keeps it
  jpeg_quality: int = 90
  frame_template: str = "{:05d}.jpg"  # frame file names in frame folders, numbered from 1
  train_list: str = ""  # list and finegym: list files, relative to the manual dir
  eval_list: str = ""
  class_names: str = ""  # list: optional file of class names, one a line
  strip_prefix: str = ""  # list: prefix removed from listed paths
  workers: int = 0  # conversion processes; 0: one per core


def config_name(resize_hw, jpeg_quality: int, prefix: str = "") -> str:
  """A config's name from its storage settings, e.g. 240x320, gym99_128x171_q75, original."""
  size = f"{resize_hw[0]}x{resize_hw[1]}" if resize_hw else "original"
  return f"{prefix}{size}" + ("" if jpeg_quality == 90 else f"_q{jpeg_quality}")


def make_config(num_classes: int = 0, prefix: str = "", **settings) -> VideoConfig:
  """A VideoConfig named after its storage settings (config_name)."""
  defaults = VideoConfig(name="")
  resize_hw = settings.get("resize_hw", defaults.resize_hw)
  quality = settings.get("jpeg_quality", defaults.jpeg_quality)
  size = f"{resize_hw[0]}x{resize_hw[1]}" if resize_hw else "their own size"
  return VideoConfig(
    name=config_name(resize_hw, quality, prefix),
    version=DATASET_VERSION,
    num_classes=num_classes,
    description=f"frames stored as JPEG (quality {quality}) at {size}",
    **settings,
  )


class _VideoDataset(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared by the dataset builders; LAYOUT is the dataset.name whose label files are read."""

  LAYOUT = ""
  VERSION = tfds.core.Version(DATASET_VERSION)
  RELEASE_NOTES = {
    DATASET_VERSION: "Frames as JPEG at the training resize size, records in label-file order."
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "The official download in its own layout (stss-jax docs/datasets.md)."
  )

  def __init__(self, **kwargs):
    if kwargs.get("file_format") is None:  # random access by record (tfds.data_source)
      kwargs["file_format"] = "array_record"
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    height, width = self.builder_config.resize_hw or (None, None)
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {
          "video_id": tfds.features.Text(),
          "label": tfds.features.ClassLabel(num_classes=self.builder_config.num_classes or None),
          "frames": tfds.features.Video((None, height, width, 3), encoding_format="jpeg"),
          "first_frame": tfds.features.Scalar(np.int64),
          "num_frames": tfds.features.Scalar(np.int64),
        }
      ),
      supervised_keys=("frames", "label"),
      disable_shuffling=True,  # record i is the i-th usable video of the label file
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    from input_pipeline.labels import LabelFileError, data_path, read_label_files

    config = self.builder_config
    manual_dir = data_path(dl_manager.manual_dir)
    if not manual_dir.is_dir():
      raise LabelFileError(
        f"manual dir {manual_dir} is not a directory: point it at the {self.name} download"
      )
    train, validation, names = read_label_files(
      self.LAYOUT,
      manual_dir,
      config.num_classes,
      config.train_list,
      config.eval_list,
      config.class_names,
      config.strip_prefix,
    )
    if names is not None:
      if config.num_classes and len(names) != config.num_classes:
        raise LabelFileError(
          f"the class list of {manual_dir} names {len(names)} classes, {self.name} expects "
          f"{config.num_classes}"
        )
      self.info.features["label"].names = list(names)
    splits = {"train": train, "validation": validation}
    check_consistent(splits)
    self._conversions = (
      epath.Path(dl_manager.download_dir)
      / CONVERSIONS
      / f"{self.name}-{config.name}-{_digest(config, splits)}"
    )
    return {
      split: self._generate_examples(split, videos, self._conversions / split)
      for split, videos in splits.items()
    }

  def download_and_prepare(self, *args, **kwargs):
    """As TFDS's, then removes the conversions kept for a rerun: the build is complete."""
    self._conversions = None
    super().download_and_prepare(*args, **kwargs)
    if self._conversions is not None:
      self._conversions.rmtree(missing_ok=True)

  def _generate_examples(self, split: str, videos: list[Video], conversions: epath.Path):
    config = self.builder_config
    workers = config.workers or os.cpu_count() or 1
    earlier = len(list(conversions.glob("*.pkl"))) if conversions.exists() else 0
    if earlier:
      print(
        f"{split}: {earlier} of {len(videos)} videos were converted by an earlier build that did "
        "not finish "
        f"(kept in {conversions}); converting the other {len(videos) - earlier}",
        flush=True,
      )
    kept = {"ids": [], "labels": [], "num_frames": [], "first_frames": []}
    skipped = []
    for key, (video, result) in enumerate(
      zip(
        videos,
        conversion.converted(
          videos,
          config.frame_template,
          config.resize_hw,
          config.jpeg_quality,
          workers,
          kept_in=conversions,
        ),
      )
    ):
      if isinstance(result, str):
        skipped.append({"id": video.video_id, "reason": result})
        continue
      kept["ids"].append(result.video_id)
      kept["labels"].append(result.label)
      kept["num_frames"].append(len(result.frames))
      kept["first_frames"].append(result.first_frame)
      yield (
        key,
        {
          "video_id": result.video_id,
          "label": result.label,
          "frames": list(result.frames),
          "first_frame": result.first_frame,
          "num_frames": len(result.frames),
        },
      )
    if not kept["ids"]:
      reasons = "; ".join(s["reason"] for s in skipped[:3])
      raise RuntimeError(
        f"no usable video in the {split} split of {self.name} ({len(skipped)} skipped: {reasons})"
      )
    self.info.metadata[split] = dict(kept, skipped=skipped)


def _digest(config: VideoConfig, splits: dict[str, list[Video]]) -> str:
  """Names the conversions of these settings and these videos, so that a rerun reuses only its
  own."""
  settings = dataclasses.asdict(dataclasses.replace(config, workers=0))
  videos = {
    split: [[v.video_id, v.label, str(v.path), v.start_frame, v.end_frame] for v in videos]
    for split, videos in splits.items()
  }
  text = json.dumps([settings, videos], sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_consistent(splits: dict[str, list[Video]]) -> None:
  """Refuses a video listed twice with different labels, within a split or across splits."""
  from absl import logging

  from input_pipeline.labels import LabelFileError

  seen: dict[str, tuple[str, int]] = {}
  for split, videos in splits.items():
    for video in videos:
      if video.video_id in seen and seen[video.video_id][1] != video.label:
        first_split, first_label = seen[video.video_id]
        raise LabelFileError(
          f"video {video.video_id} is labelled {first_label} in the {first_split} list and "
          f"{video.label} in the {split} list"
        )
      seen.setdefault(video.video_id, (split, video.label))
  both = set(v.video_id for v in splits["train"]) & set(v.video_id for v in splits["validation"])
  if both:
    logging.warning("%d videos are listed in both splits (e.g. %s)", len(both), sorted(both)[0])


class SomethingSomethingV1(_VideoDataset):
  """Something-Something V1: frame folders and the three CSV label files."""

  LAYOUT = "ssv1"
  BUILDER_CONFIGS = [make_config()]


class SomethingSomethingV2(_VideoDataset):
  """Something-Something V2: webm videos and the three JSON label files."""

  LAYOUT = "ssv2"
  BUILDER_CONFIGS = [make_config()]


class Diving48(_VideoDataset):
  """Diving-48 (V2 labels): rgb/<vid_name>.mp4 and Diving48_V2_{train,test}.json."""

  LAYOUT = "diving48"
  BUILDER_CONFIGS = [make_config(48)]


class Finegym(_VideoDataset):
  """FineGym element clips: <clip>.mp4 and the release's list files of Gym99 or Gym288."""

  LAYOUT = "finegym"
  BUILDER_CONFIGS = [
    make_config(n, f"gym{n}_", train_list=t, eval_list=v) for n, (t, v) in FINEGYM_LISTS.items()
  ]


class VideoList(_VideoDataset):
  """TSM-style `path num_frames label` lists over frame folders; built with a config made by
  python -m input_pipeline.prepare --dataset=list (no config is built in)."""

  LAYOUT = "list"
