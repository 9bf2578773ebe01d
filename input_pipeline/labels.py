"""Readers of the label files each dataset ships, into one list of `Video` records.

Every reader checks what it reads and names the file and line of anything wrong: a label
outside the class list, a malformed line, an empty split, a path that leaves the data directory.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import pathlib
import posixpath

from etils import epath

from stss_jax import storage


@dataclasses.dataclass(frozen=True)
class Video:
  video_id: str  # the dataset's id of the video (its folder or file name without extension)
  path: pathlib.Path  # frame folder or video file, inside the data directory
  label: int  # class index, 0-based
  num_frames: int | None = None  # known from list files; None until decoded
  start_frame: int | None = None  # Diving-48: first frame of the dive (0-based)
  end_frame: int | None = None  # Diving-48: one past the last frame


class LabelFileError(ValueError):
  """A label file that cannot be used as it is; the message names the file and line."""


def read_text(path: pathlib.Path) -> str:
  """A label file's text (UTF-8), or an error naming the file and the offending byte's place."""
  path = epath.Path(path)
  data = path.read_bytes()
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = data[: e.start].count(b"\n") + 1
    raise LabelFileError(
      f"{path}:{line}: byte {data[e.start]:#04x} at offset {e.start} is not UTF-8 "
      "(label files are UTF-8 text)"
    ) from None


def read_json(path: pathlib.Path, kind: type) -> dict | list:
  """A JSON label file holding a `kind` (dict or list), or an error naming the file and line."""
  try:
    value = json.loads(read_text(path))
  except json.JSONDecodeError as e:
    raise LabelFileError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None
  if not isinstance(value, kind):
    raise LabelFileError(
      f"{path}: expected a JSON {'object' if kind is dict else 'array'}, "
      f"got a {type(value).__name__}"
    )
  return value


def data_path(location) -> pathlib.Path | epath.Path:
  """A dataset directory or file: a local path (whose links `inside` resolves), or a cloud one."""
  return pathlib.Path(location) if storage.is_local(location) else epath.Path(location)


def inside(data_dir: pathlib.Path, relative: str, source: str) -> pathlib.Path:
  """`relative` resolved under `data_dir`, refusing paths that escape it."""
  if not storage.is_local(data_dir):  # a bucket: no links to follow, only the name to normalise
    root = data_dir
    path = epath.Path(posixpath.normpath(str(root / relative)).replace(":/", "://", 1))
    inside_root = str(path) == str(root) or str(path).startswith(str(root).rstrip("/") + "/")
  else:
    root = data_dir.resolve()
    path = (root / relative).resolve()
    inside_root = path == root or root in path.parents
  if not inside_root:
    raise LabelFileError(f"{source}: path {relative!r} leaves the data directory {root}")
  return path


def _check_label(label: int, num_classes: int | None, source: str) -> int:
  if num_classes is not None and not 0 <= label < num_classes:
    raise LabelFileError(
      f"{source}: label {label} is outside the {num_classes} classes (0..{num_classes - 1})"
    )
  return label


def _nonempty(videos: list[Video], source) -> list[Video]:
  if not videos:
    raise LabelFileError(f"{source}: no videos listed")
  return videos


def read_class_names(path: pathlib.Path) -> list[str]:
  """One class name per line (SSv1 `something_category.txt`, `-labels.csv`)."""
  names = [line.strip() for line in read_text(path).splitlines() if line.strip()]
  if len(set(names)) != len(names):
    raise LabelFileError(f"{path}: repeated class names")
  return names


def read_list_file(
  path: pathlib.Path, data_dir: pathlib.Path, num_classes: int | None = None, strip_prefix: str = ""
) -> list[Video]:
  """TSM list files: `path num_frames label` per line, path relative to `data_dir` once
  `strip_prefix` (e.g. the authors' `/Dataset/SSV1/`) is removed from it."""
  videos = []
  for number, line in enumerate(read_text(path).splitlines(), start=1):
    if not line.strip():
      continue
    source = f"{path}:{number}"
    parts = line.split()
    if len(parts) != 3:
      raise LabelFileError(f"{source}: expected 'path num_frames label', got {line!r}")
    entry, frames, label = parts
    try:
      frames, label = int(frames), int(label)
    except ValueError:
      raise LabelFileError(
        f"{source}: num_frames and label must be integers, got {line!r}"
      ) from None
    if strip_prefix and entry.startswith(strip_prefix):
      entry = entry[len(strip_prefix) :]
    if entry.startswith("/"):
      raise LabelFileError(
        f"{source}: absolute path {entry!r}; set the prefix to strip so it is relative "
        "to the data directory"
      )
    videos.append(
      Video(
        pathlib.PurePath(entry).name,
        inside(data_dir, entry, source),
        _check_label(label, num_classes, source),
        frames,
      )
    )
  return _nonempty(videos, path)


def read_ssv1(data_dir: pathlib.Path, split: str) -> tuple[list[Video], list[str]]:
  """`something-something-v1-{split}.csv` (`id;class name`) + `-labels.csv`; frames in
  `20bn-something-something-v1/<id>/`."""
  names = read_class_names(data_dir / "something-something-v1-labels.csv")
  index = {name: i for i, name in enumerate(names)}
  path = data_dir / f"something-something-v1-{split}.csv"
  videos = []
  for number, row in enumerate(csv.reader(read_text(path).splitlines(), delimiter=";"), start=1):
    if not row:
      continue
    source = f"{path}:{number}"
    if len(row) != 2 or row[1] not in index:
      raise LabelFileError(
        f"{source}: expected 'id;class name' with a class of the labels file, got {';'.join(row)!r}"
      )
    videos.append(
      Video(
        row[0], inside(data_dir, f"20bn-something-something-v1/{row[0]}", source), index[row[1]]
      )
    )
  return _nonempty(videos, path), names


def ssv2_class(template: str) -> str:
  """SSv2's class of a video: its template with the [something] brackets removed."""
  return template.replace("[", "").replace("]", "")


SSV2_FILES = {
  "labels": "something-something-v2-labels.json",
  "train": "something-something-v2-train.json",
  "validation": "something-something-v2-validation.json",
}


def read_ssv2(
  data_dir: pathlib.Path, split: str, list_file: str = "", labels_file: str = ""
) -> tuple[list[Video], list[str]]:
  """`something-something-v2-labels.json` ({name: "id"}) + `-{train,validation}.json`, or the
  files named instead (relative to data_dir); videos `20bn-something-something-v2/<id>.webm`."""
  labels_path = data_dir / (labels_file or SSV2_FILES["labels"])
  labels = {}
  for name, i in read_json(labels_path, dict).items():
    try:
      labels[name] = int(i)
    except (TypeError, ValueError):
      raise LabelFileError(f"{labels_path}: class {name!r} has id {i!r}, not an integer") from None
  names = [name for name, _ in sorted(labels.items(), key=lambda item: item[1])]
  if sorted(labels.values()) != list(range(len(labels))):
    raise LabelFileError(f"{labels_path}: class ids are not 0..{len(labels) - 1}")
  path = data_dir / (list_file or SSV2_FILES[split])
  videos = []
  for number, entry in enumerate(read_json(path, list), start=1):
    source = f"{path} entry {number}"
    if not isinstance(entry, dict) or not {"id", "template"} <= entry.keys():
      raise LabelFileError(f"{source}: needs an id and a template, got {entry!r}")
    name = ssv2_class(str(entry["template"]))
    if name not in labels:
      raise LabelFileError(
        f"{source}: class {name!r} (from its template) is not in {labels_path.name}"
      )
    video_id = str(entry["id"])
    videos.append(
      Video(
        video_id,
        inside(data_dir, f"20bn-something-something-v2/{video_id}.webm", source),
        labels[name],
      )
    )
  return _nonempty(videos, path), names


def read_diving48(data_dir: pathlib.Path, split: str, num_classes: int = 48) -> list[Video]:
  """`Diving48_V2_{train,test}.json`: vid_name, label, start_frame, end_frame;
  `rgb/<vid_name>.mp4`."""
  path = data_dir / f"Diving48_V2_{split}.json"
  videos = []
  for number, entry in enumerate(read_json(path, list), start=1):
    source = f"{path} entry {number}"
    try:
      name, label = str(entry["vid_name"]), int(entry["label"])
      start, end = (
        None if entry.get(k) is None else int(entry[k]) for k in ("start_frame", "end_frame")
      )
    except (KeyError, TypeError, ValueError):
      raise LabelFileError(
        f"{source}: needs vid_name, an integer label and integer start_frame/end_frame "
        f"if any, got {entry!r}"
      ) from None
    videos.append(
      Video(
        name,
        inside(data_dir, f"rgb/{name}.mp4", source),
        _check_label(label, num_classes, source),
        start_frame=start,
        end_frame=end,
      )
    )
  return _nonempty(videos, path)


def read_finegym(list_path: pathlib.Path, data_dir: pathlib.Path, num_classes: int) -> list[Video]:
  """Gym99/Gym288 lists `<clip name> <label>`; clips `<clip name>.mp4` in the data directory."""
  videos = []
  for number, line in enumerate(read_text(list_path).splitlines(), start=1):
    if not line.strip():
      continue
    source = f"{list_path}:{number}"
    parts = line.split()
    if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
      raise LabelFileError(f"{source}: expected '<clip name> <label>', got {line!r}")
    videos.append(
      Video(
        parts[0],
        inside(data_dir, f"{parts[0]}.mp4", source),
        _check_label(int(parts[1]), num_classes, source),
      )
    )
  return _nonempty(videos, list_path)


def read_label_files(
  name: str,
  data_dir: pathlib.Path,
  num_classes: int,
  train_list: str = "",
  eval_list: str = "",
  class_names: str = "",
  strip_prefix: str = "",
):
  """(train videos, evaluation videos, class names or None) from a dataset's label files."""
  names = None
  if name == "list":
    train = read_list_file(data_dir / train_list, data_dir, num_classes, strip_prefix)
    evaluation = read_list_file(data_dir / eval_list, data_dir, num_classes, strip_prefix)
    if class_names:
      names = read_class_names(data_dir / class_names)
  elif name == "ssv1":
    train, names = read_ssv1(data_dir, "train")
    evaluation, _ = read_ssv1(data_dir, "validation")
  elif name == "ssv2":
    train, names = read_ssv2(data_dir, "train", train_list, class_names)
    evaluation, _ = read_ssv2(data_dir, "validation", eval_list, class_names)
  elif name == "diving48":
    train, evaluation = (
      read_diving48(data_dir, "train", num_classes),
      read_diving48(data_dir, "test", num_classes),
    )
  elif name == "finegym":
    train = read_finegym(data_dir / train_list, data_dir, num_classes)
    evaluation = read_finegym(data_dir / eval_list, data_dir, num_classes)
  else:
    raise ValueError(f"dataset {name!r} is unknown: use one of list, ssv1, ssv2, diving48, finegym")
  return train, evaluation, names
