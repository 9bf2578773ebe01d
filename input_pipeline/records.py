"""Prepared datasets: TFRecord shards of JPEG frames, with an index that reaches every frame.

Each shard `OUT/{split}-{i:05d}-of-{n:05d}.tfrecord` holds one `tf.train.Example` per video:
`id` (bytes), `label` (int64), `frames` (JPEG bytes, one per frame, in order), `first_frame`
(int64, index of frames[0] in the source video) and `height` / `width`. Any TFRecord reader can
read them. Beside each shard, `.index.npz` records where every frame's JPEG bytes sit in the
file, so that training reads only the frames it samples (seek + read) instead of the whole
video, and can reach example i of an epoch directly (a resumed run needs no replay).
`OUT/prepared.json` lists the shards of each split and the class names; it is written last.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Iterable, Sequence

import numpy as np

MANIFEST = "prepared.json"
FORMAT_VERSION = 1
SPLITS = ("train", "validation")
JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"


def shard_name(split: str, index: int, count: int) -> str:
  return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def index_path(shard: pathlib.Path) -> pathlib.Path:
  return shard.with_suffix(".index.npz")


@dataclasses.dataclass(frozen=True)
class PreparedVideo:
  video_id: str
  label: int
  frames: Sequence[bytes]  # JPEG bytes, one per frame
  first_frame: int  # index of frames[0] in the source video
  height: int
  width: int


def _example(video: PreparedVideo) -> bytes:
  import tensorflow as tf

  def ints(*values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))

  features = {
      "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[video.video_id.encode()])),
      "label": ints(video.label),
      "frames": tf.train.Feature(bytes_list=tf.train.BytesList(value=list(video.frames))),
      "first_frame": ints(video.first_frame),
      "height": ints(video.height),
      "width": ints(video.width),
  }
  return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def write_shard(path: pathlib.Path, videos: Iterable[PreparedVideo]) -> int:
  """Writes the shard, then its index, each under a temporary name renamed when complete.
  Returns the number of videos written."""
  import tensorflow as tf

  path = pathlib.Path(path)
  temporary = path.with_name(path.name + ".tmp")
  offsets, lengths, first_of_video = [], [], [0]
  ids, labels, first_frames = [], [], []
  position = 0  # byte offset of the next record in the file
  with tf.io.TFRecordWriter(str(temporary)) as writer:
    for video in videos:
      record = _example(video)
      writer.write(record)
      start = position + 12  # a record is: length (8 bytes), its CRC (4), data, data CRC (4)
      cursor = 0
      for jpeg in video.frames:  # bytes_list values are serialised in order, each contiguous
        at = record.index(jpeg, cursor)
        offsets.append(start + at)
        lengths.append(len(jpeg))
        cursor = at + len(jpeg)
      first_of_video.append(len(offsets))
      ids.append(video.video_id)
      labels.append(video.label)
      first_frames.append(video.first_frame)
      position = start + len(record) + 4
  if os.path.getsize(temporary) != position:
    raise RuntimeError(f"{temporary}: {os.path.getsize(temporary)} bytes written, the index expects {position}")
  os.replace(temporary, path)
  temporary_index = path.with_name(path.name + ".index.tmp.npz")
  np.savez(temporary_index, frame_offsets=np.array(offsets, np.int64), frame_lengths=np.array(lengths, np.int64),
           first_of_video=np.array(first_of_video, np.int64), ids=np.array(ids, dtype=str),
           labels=np.array(labels, np.int32), first_frames=np.array(first_frames, np.int64))
  os.replace(temporary_index, index_path(path))
  return len(ids)


def read_manifest(out_dir: pathlib.Path) -> dict:
  path = pathlib.Path(out_dir) / MANIFEST
  try:
    manifest = json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"{path}: not a prepared dataset manifest ({e}); rerun python -m input_pipeline.prepare") from e
  if manifest.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{path}: format version {manifest.get('format_version')}, this code reads {FORMAT_VERSION}; "
                     "prepare the dataset again")
  return manifest


class PreparedSplit:
  """One split of a prepared dataset: labels and ids in memory, frames read on demand."""

  encoded = True  # frames come out as JPEG bytes, decoded by the tf.data graph

  def __init__(self, out_dir: pathlib.Path, split: str):
    manifest = read_manifest(out_dir)
    out_dir = pathlib.Path(out_dir)
    self.shards = [out_dir / name for name in manifest["splits"][split]["shards"]]
    parts = []
    for shard in self.shards:
      try:
        with np.load(index_path(shard)) as index:
          parts.append({key: index[key] for key in index.files})
      except OSError as e:
        raise ValueError(f"{index_path(shard)}: missing or unreadable ({e}); rerun the prepare command") from e
    if not parts or not sum(len(p["ids"]) for p in parts):
      raise ValueError(f"{out_dir}: the {split} split holds no videos")
    self.ids = np.concatenate([p["ids"] for p in parts])
    self.labels = np.concatenate([p["labels"] for p in parts])
    self.first_frames = np.concatenate([p["first_frames"] for p in parts])
    self.shard_of = np.concatenate([np.full(len(p["ids"]), k) for k, p in enumerate(parts)])
    frame_base = np.cumsum([0] + [len(p["frame_offsets"]) for p in parts])
    self.first_of_video = np.concatenate([p["first_of_video"][:-1] + base for p, base in zip(parts, frame_base)]
                                         + [frame_base[-1:]])
    self.frame_offsets = np.concatenate([p["frame_offsets"] for p in parts])
    self.frame_lengths = np.concatenate([p["frame_lengths"] for p in parts])

  def __len__(self) -> int:
    return len(self.ids)

  def label(self, i: int) -> int:
    return int(self.labels[i])

  def video_id(self, i: int) -> str:
    return str(self.ids[i])

  def read(self, i: int, sample) -> tuple[np.ndarray, np.ndarray]:
    """JPEG bytes of the frames `sample(num_frames)` picks, and their indices in the source video."""
    first = self.first_of_video[i]
    indices = sample(int(self.first_of_video[i + 1] - first))
    frames = []
    with open(self.shards[self.shard_of[i]], "rb") as file:
      for k in indices:
        file.seek(self.frame_offsets[first + k])
        frames.append(file.read(self.frame_lengths[first + k]))
    return np.array(frames, dtype=object), indices + self.first_frames[i]
