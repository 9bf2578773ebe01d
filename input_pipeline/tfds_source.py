"""Datasets built by input_pipeline.tfds_builders, found in a TFDS data dir and read by record.

Training reads a split through `tfds.data_source` (ArrayRecord, random access), decodes only the
JPEG frames that sampling picks, and takes ids, labels and first frames from the dataset info's
metadata, so that nothing is read before the first batch.
"""

from __future__ import annotations

import json
import os

import numpy as np
from etils import epath

from input_pipeline.tfds_builders import TFDS_NAMES


def default_data_dir() -> str:
  """Where TFDS keeps datasets unless told otherwise: $TFDS_DATA_DIR or ~/tensorflow_datasets."""
  return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def build_command(dataset_name: str, data_dir=None) -> str:
  """The prepare command that builds the dataset (into `data_dir`, else TFDS's default)."""
  into = f" --data_dir={data_dir}" if data_dir else ""
  return (
    f"`python -m input_pipeline.prepare --dataset={dataset_name} --manual_dir=RAW{into}` "
    "(RAW: the official download)"
  )


def _built(directory: epath.Path) -> list[epath.Path]:
  """Version directories (holding dataset_info.json) under a dataset's directory."""
  infos = list(directory.glob("*/dataset_info.json")) + list(
    directory.glob("*/*/dataset_info.json")
  )
  return sorted(info.parent for info in infos)


def _dataset_name(info: epath.Path) -> str:
  return json.loads(info.read_text()).get("name", "?")


def _label(version_dir: epath.Path, root: epath.Path) -> str:
  """A version directory as a TFDS name: name[/config]:version."""
  parts = version_dir.relative_to(root).parts
  return "/".join(parts[:-1]) + ":" + parts[-1]


def find(data_dir: str, dataset_name: str, tfds_name: str = "") -> epath.Path | None:
  """The version directory of the built dataset for config.dataset.name `dataset_name`, or None
  when `data_dir` is not a TFDS data dir (then it holds the dataset in its official layout).

  `tfds_name` narrows the choice: "name", "name/config" or either with ":version". Raises
  ValueError, in one line that names the directory, when the dataset is not built there, when
  several builds fit, or when the directory holds other TFDS datasets only.
  """
  wanted = tfds_name or TFDS_NAMES[dataset_name]
  name, _, version = wanted.partition(":")
  base, _, config = name.partition("/")
  root = epath.Path(data_dir or default_data_dir())
  from stss_jax import storage

  bucket = storage.missing_bucket(root)
  if bucket:
    raise ValueError(
      f"config.dataset.data_dir = {data_dir!r}: the bucket {bucket} does not exist or cannot be "
      "seen "
      "with these credentials"
    )
  if (root / "dataset_info.json").exists():  # pointed straight at one build
    found = _dataset_name(root / "dataset_info.json")
    if found != base:
      raise ValueError(
        f"config.dataset.data_dir = {data_dir!r} holds a build of {found!r}, not {base!r}"
      )
    return root
  if root.name == base and not (root / base).is_dir():  # pointed at the dataset's own directory
    root = root.parent
  if not (root / base).is_dir():
    if not data_dir:
      raise ValueError(
        f"{base} is not built in the default TFDS data dir {root}: build it with "
        f"{build_command(dataset_name)}, or point --config.dataset.data_dir at a TFDS data dir "
        "that holds it, or at the dataset in its official layout (docs/datasets.md)"
      )
    infos = (
      list(root.glob("*/*/dataset_info.json")) + list(root.glob("*/*/*/dataset_info.json"))
      if root.is_dir()
      else []
    )
    others = sorted({_dataset_name(info) for info in infos})
    if others:
      raise ValueError(
        f"config.dataset.data_dir = {data_dir!r} holds the TFDS datasets {others}, not {base!r}: "
        f"build it with {build_command(dataset_name, data_dir)}"
      )
    return None
  builds = [
    v
    for v in _built(root / base)
    if (not config or v.relative_to(root / base).parts[0] == config)
    and (not version or v.name == version)
  ]
  if len(builds) == 1:
    return builds[0]
  available = [_label(v, root) for v in _built(root / base)]
  if not builds:
    raise ValueError(
      f"{wanted} is not built in {root} (built there: "
      f"{', '.join(available) or 'nothing complete'}); "
      f"build it with {build_command(dataset_name, root)}"
    )
  raise ValueError(
    f"{root} holds several builds of {base} ({', '.join(available)}): choose one with "
    f"--config.dataset.tfds_name"
  )


class TfdsSplit:
  """One split of a built dataset: ids, labels and first frames from the metadata, frames read
  by record on demand."""

  encoded = True  # frames come out as JPEG bytes, decoded by the tf.data graph

  def __init__(self, version_dir: epath.Path, split: str):
    import tensorflow_datasets as tfds

    self.where = f"{version_dir} ({split})"
    builder = tfds.builder_from_directory(os.fspath(version_dir))
    metadata = builder.info.metadata or {}
    if split not in metadata or split not in builder.info.splits:
      raise ValueError(
        f"{version_dir}: no {split} split with its metadata; build it with input_pipeline.prepare"
      )
    self.ids = np.array(metadata[split]["ids"], dtype=str)
    self.labels = np.array(metadata[split]["labels"], np.int32)
    self.first_frames = np.array(metadata[split]["first_frames"], np.int64)
    self.class_names = list(builder.info.features["label"].names)
    # Raw records parsed here: TFDS's own deserialisation of a whole video costs more than the read.
    self.records = builder.as_data_source(
      split=split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES
    )
    from tensorflow.core.example import example_pb2

    self._parse = example_pb2.Example.FromString
    if len(self.records) != len(self.ids):
      raise ValueError(
        f"{self.where}: {len(self.records)} records, the metadata lists {len(self.ids)}; build it "
        "again"
      )

  def __len__(self) -> int:
    return len(self.ids)

  def label(self, i: int) -> int:
    return int(self.labels[i])

  def video_id(self, i: int) -> str:
    return str(self.ids[i])

  def read(self, i: int, sample) -> tuple[np.ndarray, np.ndarray]:
    """JPEG bytes of the frames `sample(num_frames)` picks, and their indices in the source
    video."""
    feature = self._parse(self.records[i]).features.feature
    stored_id = feature["video_id"].bytes_list.value[0].decode()
    if stored_id != self.ids[i]:
      raise ValueError(
        f"{self.where}: record {i} holds video {stored_id}, the metadata says {self.ids[i]}; "
        "build it again"
      )
    frames = feature["frames"].bytes_list.value
    indices = sample(len(frames))
    return np.array([frames[k] for k in indices], dtype=object), indices + self.first_frames[i]
