"""docs/datasets.md, as a user follows it: each dataset's tree is made file by file from the page
(its label files with the page's contents, its videos and frame folders as small moving clips),
the page's command is run on it, and what the command prints must be what the page says. The
build is then read with plain tfds.data_source: its splits hold the videos the page's label files
name, in their order."""

import json
import pathlib
import re
import shlex

import pytest

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

from PIL import Image  # noqa: E402

from input_pipeline import prepare  # noqa: E402
from tests.test_frames import encode, moving_square  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "datasets.md"
DATASETS = ("ssv1", "ssv2", "diving48", "finegym")
# The codec of each video kind in the real downloads.
CODECS = {".webm": "libvpx-vp9", ".mp4": "mpeg4"}
VIDEO_FRAMES = 12


def blocks(marker: str) -> dict[str, str]:
  """The fenced blocks of the page that follow `<!-- marker: NAME -->`, by NAME."""
  text = PAGE.read_text()
  found = re.findall(rf"<!-- {marker}: (\S+) -->\n```\w*\n(.*?)```", text, flags=re.S)
  return dict(found)


def tree_paths(tree: str) -> list[str]:
  """The paths a tree block draws (two spaces per level, folders ending in '/', '...' skipped),
  folders included."""
  paths, parents = [], []
  for line in tree.splitlines():
    name = line.strip()
    if not name or name == "...":
      continue
    depth = (len(line) - len(line.lstrip(" "))) // 2
    parents = parents[:depth]
    path = "/".join(parents + [name.rstrip("/")])
    paths.append(path + ("/" if name.endswith("/") else ""))
    if name.endswith("/"):
      parents.append(name.rstrip("/"))
  return paths


def make_tree(root: pathlib.Path, dataset: str) -> None:
  files = blocks("file")
  for path in tree_paths(blocks("tree")[dataset]):
    target = root / path
    if path.endswith("/"):
      continue
    if path in files:
      target.write_text(files[path])
    elif target.suffix == ".jpg":  # frame N of a clip
      target.parent.mkdir(parents=True, exist_ok=True)
      Image.fromarray(moving_square(VIDEO_FRAMES, size=48)[int(target.stem) - 1]).save(target)
    elif target.suffix in CODECS:
      target.parent.mkdir(parents=True, exist_ok=True)
      encode(target, moving_square(VIDEO_FRAMES, size=48), CODECS[target.suffix])
    else:
      raise AssertionError(f"the page shows {path} but not its contents")


def test_every_dataset_has_a_tree_its_label_files_a_command_and_its_output():
  for marker in ("tree", "command", "prints"):
    assert sorted(blocks(marker)) == sorted(DATASETS), marker
  files = blocks("file")
  for dataset in DATASETS:
    shown = {p for p in tree_paths(blocks("tree")[dataset]) if not p.endswith("/")}
    media = {p for p in shown if pathlib.Path(p).suffix in (".jpg", *CODECS)}
    assert shown - media == {name for name in files if name.startswith(f"{dataset}/")}, dataset


def test_the_tree_paths_of_a_block():
  tree = "d/\n  a/\n    1.jpg\n    ...\n  b.txt\n"
  assert tree_paths(tree) == ["d/", "d/a/", "d/a/1.jpg", "d/b.txt"]


def _expected_records(dataset: str) -> dict[str, list[tuple[str, int]]]:
  """(video id, number of frames) of each split, in order, from the page's label files and tree
  (read here with plain json and str.split, not the project's readers)."""
  files = {
    name.split("/", 1)[1]: text for name, text in blocks("file").items() if name.startswith(dataset)
  }
  tree = tree_paths(blocks("tree")[dataset])
  if dataset == "ssv1":

    def frames(i):
      return sum(p.startswith(f"ssv1/20bn-something-something-v1/{i}/0") for p in tree)

    return {
      split: [
        (row.split(";")[0], frames(row.split(";")[0]))
        for row in files[f"something-something-v1-{split}.csv"].splitlines()
      ]
      for split in ("train", "validation")
    }
  if dataset == "ssv2":
    return {
      split: [
        (e["id"], VIDEO_FRAMES) for e in json.loads(files[f"something-something-v2-{split}.json"])
      ]
      for split in ("train", "validation")
    }
  if dataset == "diving48":
    return {
      split: [
        (e["vid_name"], e["end_frame"] - e["start_frame"])
        for e in json.loads(files[f"Diving48_V2_{name}.json"])
      ]
      for split, name in (("train", "train"), ("validation", "test"))
    }
  return {
    split: [(row.split()[0], VIDEO_FRAMES) for row in files[name].splitlines()]
    for split, name in (
      ("train", "gym99_train_element_v1.1.txt"),
      ("validation", "gym99_val_element.txt"),
    )
  }


@pytest.mark.parametrize("dataset", DATASETS)
def test_the_page_s_tree_built_with_the_page_s_command_prints_what_the_page_says(
  tmp_path, capsys, dataset
):
  make_tree(tmp_path / "data", dataset)
  words = shlex.split(blocks("command")[dataset])
  assert words[:3] == ["python", "-m", "input_pipeline.prepare"], words
  args = [w.replace("=/data/", f"={tmp_path / 'data'}/") for w in words[3:]]
  capsys.readouterr()
  status = prepare.main(["prepare", *args, "--workers=1"])
  out, err = capsys.readouterr()
  assert status == 0, err[-3000:]
  printed = out.replace(str(tmp_path / "data"), "/data").splitlines()
  expected = blocks("prints")[dataset].splitlines()
  assert printed[-len(expected) :] == expected

  name = expected[-2].split()[1].rsplit("/", 1)[0]
  data_dir = tmp_path / "data" / "tensorflow_datasets"
  for split, videos in _expected_records(dataset).items():
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    stored = [(r["video_id"], int(r["num_frames"]), len(r["frames"])) for r in source]
    stored = [(i.decode() if isinstance(i, bytes) else i, n, m) for i, n, m in stored]
    assert stored == [(i, n, n) for i, n in videos], split
