"""Label-file readers on the authors' real lists and on small layouts written here."""

import gzip
import json
import pathlib

import pytest

from input_pipeline import labels
from tests.conftest import FIXTURES


@pytest.mark.parametrize(
  "name,count",
  [
    pytest.param("something_train.txt", 86017, marks=pytest.mark.slow),
    ("something_val.txt", 11522),
  ],
)
def test_real_ssv1_lists_and_class_names(tmp_path, name, count):
  names = labels.read_class_names(FIXTURES / "something_category.txt")
  assert len(names) == 174
  path = FIXTURES / name
  if not path.exists():  # the training list ships compressed
    path = tmp_path / name
    path.write_bytes(gzip.decompress((FIXTURES / f"{name}.gz").read_bytes()))
  videos = labels.read_list_file(path, tmp_path, num_classes=174, strip_prefix="/Dataset/SSV1/")
  assert len(videos) == count
  assert all(v.path.parent == tmp_path.resolve() and v.num_frames > 0 for v in videos[:100])


def test_real_list_with_absolute_paths_needs_the_prefix(tmp_path):
  with pytest.raises(labels.LabelFileError, match="something_val.txt:1: absolute path"):
    labels.read_list_file(FIXTURES / "something_val.txt", tmp_path)


def write(path: pathlib.Path, text: str) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return path


@pytest.mark.parametrize(
  "line,message",
  [
    ("a/1 30 5", "label 5 is outside the 3 classes"),
    ("a/1 thirty 1", "must be integers"),
    ("a/1 30", "expected 'path num_frames label'"),
    ("../outside 30 1", "leaves the data directory"),
  ],
)
def test_list_file_errors_name_file_and_line(tmp_path, line, message):
  path = write(tmp_path / "list.txt", "a/0 12 0\n" + line + "\n")
  with pytest.raises(labels.LabelFileError, match=f"list.txt:2: .*{message}"):
    labels.read_list_file(path, tmp_path / "data", num_classes=3)


def test_empty_split_is_refused(tmp_path):
  with pytest.raises(labels.LabelFileError, match="no videos listed"):
    labels.read_list_file(write(tmp_path / "list.txt", "\n"), tmp_path)


def test_ssv1_layout(tmp_path):
  write(tmp_path / "something-something-v1-labels.csv", "Holding something\nPushing something\n")
  write(
    tmp_path / "something-something-v1-validation.csv",
    "12;Pushing something\n7;Holding something\n",
  )
  videos, names = labels.read_ssv1(tmp_path, "validation")
  assert names == ["Holding something", "Pushing something"]
  assert [(v.video_id, v.label) for v in videos] == [("12", 1), ("7", 0)]
  assert videos[0].path == (tmp_path / "20bn-something-something-v1" / "12").resolve()
  write(tmp_path / "something-something-v1-train.csv", "3;Dropping something\n")
  with pytest.raises(labels.LabelFileError, match="train.csv:1"):
    labels.read_ssv1(tmp_path, "train")


def test_ssv2_layout_takes_the_class_from_the_template(tmp_path):
  write(
    tmp_path / "something-something-v2-labels.json",
    json.dumps({"Putting something on a surface": "1", "Moving something up": "0"}),
  )
  write(
    tmp_path / "something-something-v2-validation.json",
    json.dumps(
      [
        {
          "id": "74225",
          "label": "putting a cup on a table",
          "template": "Putting [something] on a surface",
          "placeholders": ["a cup"],
        }
      ]
    ),
  )
  videos, names = labels.read_ssv2(tmp_path, "validation")
  assert names == ["Moving something up", "Putting something on a surface"]
  assert videos[0].label == 1 and videos[0].path.name == "74225.webm"


def test_diving48_and_finegym_layouts(tmp_path):
  write(
    tmp_path / "Diving48_V2_test.json",
    json.dumps([{"vid_name": "_8Vy3dlHg2w_00000", "label": 12, "start_frame": 0, "end_frame": 52}]),
  )
  (video,) = labels.read_diving48(tmp_path, "test")
  assert video.label == 12 and video.end_frame == 52 and video.path.name == "_8Vy3dlHg2w_00000.mp4"
  write(tmp_path / "gym99_val.txt", "0LtLS9wROrk_E_002407_002435_A_0003_0005 72\n")
  (clip,) = labels.read_finegym(tmp_path / "gym99_val.txt", tmp_path, 99)
  assert clip.label == 72
  write(tmp_path / "gym99_bad.txt", "clip 140\n")
  with pytest.raises(labels.LabelFileError, match="gym99_bad.txt:1: label 140"):
    labels.read_finegym(tmp_path / "gym99_bad.txt", tmp_path, 99)


SSV2_LABELS = json.dumps({"Moving something up": "0", "Putting something on a surface": "1"})
SSV2_ENTRY = '{"id": "74225", "template": "Putting [something] on a surface"}'


@pytest.mark.parametrize(
  "file,content,message",
  [
    (
      "validation",
      b"[" + SSV2_ENTRY.encode() + b',\n  {"id": "7", "template": }]',
      r"v2-validation.json:2:\d+: not valid JSON \(Expecting value\)",
    ),
    (
      "validation",
      b'[{"template": "Moving [something] up"}]',
      r"v2-validation.json entry 1: needs an id and a template",
    ),
    ("validation", b'["74225"]', r"v2-validation.json entry 1: needs an id and a template"),
    ("validation", b'{"id": "74225"}', r"v2-validation.json: expected a JSON array, got a dict"),
    (
      "validation",
      b"[" + SSV2_ENTRY.encode() + b',\n {"id": "caf\xe9", "template": "x"}]',
      r"v2-validation.json:2: byte 0xe9 at offset \d+ is not UTF-8",
    ),
    (
      "labels",
      b'{"Moving something up": "zero"}',
      r"v2-labels.json: class 'Moving something up' has id 'zero'",
    ),
    ("labels", b"\xff{}", r"v2-labels.json:1: byte 0xff at offset 0 is not UTF-8"),
  ],
)
def test_ssv2_label_file_errors_name_the_file_and_the_entry(tmp_path, file, content, message):
  write(tmp_path / "something-something-v2-labels.json", SSV2_LABELS)
  write(tmp_path / "something-something-v2-validation.json", f"[{SSV2_ENTRY}]")
  (tmp_path / f"something-something-v2-{file}.json").write_bytes(content)
  with pytest.raises(labels.LabelFileError, match=message):
    labels.read_ssv2(tmp_path, "validation")


def test_other_layouts_name_undecodable_bytes_and_bad_fields(tmp_path):
  (tmp_path / "gym99_val.txt").write_bytes(b"clip_a 72\nclip_\xff 3\n")
  with pytest.raises(
    labels.LabelFileError, match=r"gym99_val.txt:2: byte 0xff at offset 15 is not UTF-8"
  ):
    labels.read_finegym(tmp_path / "gym99_val.txt", tmp_path, 99)
  (tmp_path / "list.txt").write_bytes(b"\x80a 10 1\n")
  with pytest.raises(labels.LabelFileError, match=r"list.txt:1: byte 0x80"):
    labels.read_list_file(tmp_path / "list.txt", tmp_path)
  write(
    tmp_path / "Diving48_V2_test.json",
    json.dumps([{"vid_name": "a", "label": 1, "start_frame": "x"}]),
  )
  with pytest.raises(labels.LabelFileError, match=r"Diving48_V2_test.json entry 1: needs vid_name"):
    labels.read_diving48(tmp_path, "test")
  write(tmp_path / "Diving48_V2_test.json", '[{"vid_name": "a",\n "label": 1,,}]')
  with pytest.raises(labels.LabelFileError, match=r"Diving48_V2_test.json:2:\d+: not valid JSON"):
    labels.read_diving48(tmp_path, "test")


def test_ssv2_label_files_can_be_named(tmp_path):
  """Mirrors and re-packaged downloads rename SSv2's JSON files; prepare's --train_list,
  --eval_list and --class_names name them, relative to the download."""
  names = {"Moving something up": "1", "Pushing something": "0"}
  entries = {
    "train": [{"id": "7", "template": "Pushing [something]"}],
    "validation": [{"id": "8", "template": "Moving [something] up"}],
  }
  standard, renamed = tmp_path / "standard", tmp_path / "renamed"
  for root, files in (
    (standard, labels.SSV2_FILES),
    (
      renamed,
      {"labels": "classes.json", "train": "train_list.json", "validation": "val_list.json"},
    ),
  ):
    (root / "20bn-something-something-v2").mkdir(parents=True)
    (root / files["labels"]).write_text(json.dumps(names))
    for split in ("train", "validation"):
      (root / files[split]).write_text(json.dumps(entries[split]))
  default = labels.read_label_files("ssv2", standard, 0)
  named = labels.read_label_files(
    "ssv2", renamed, 0, "train_list.json", "val_list.json", "classes.json"
  )
  for found in (named, default):
    videos = [[(v.video_id, v.label) for v in split] for split in found[:2]]
    assert videos == [[("7", 0)], [("8", 1)]]
  assert named[2] == default[2] == ["Pushing something", "Moving something up"]
  with pytest.raises(FileNotFoundError, match="train_list.json"):
    labels.read_label_files("ssv2", standard, 0, "train_list.json")
