"""The prepare tool: TFDS builds of the tiny datasets the tests write, read back with plain
tfds.data_source (not project code) and by the training pipeline."""

import dataclasses
import json
import pathlib
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

from input_pipeline import prepare, sources, tfds_builders  # noqa: E402,F401  (registers the builders)
from tests.test_frames import encode, moving_square, write_folder  # noqa: E402
from tests.test_video_source import tiny_config, write_ssv1  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Done:
  returncode: int
  stdout: str
  stderr: str


@pytest.fixture
def run_prepare(capsys):
  """The prepare command in process: its exit status and what it printed."""

  def run(*args):
    capsys.readouterr()
    status = prepare.main(["prepare", *map(str, args)])
    return Done(status, *capsys.readouterr())

  return run


def plain_records(name, split, data_dir):
  """Every record of a split as TFDS itself decodes it: (id, label, frames (T, H, W, 3), first
  frame)."""
  source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  return [
    (
      r["video_id"].decode() if isinstance(r["video_id"], bytes) else r["video_id"],
      int(r["label"]),
      np.asarray(r["frames"]),
      int(r["first_frame"]),
      int(r["num_frames"]),
    )
    for r in source
  ]


def test_built_frame_folders_hold_the_frames_and_give_the_clips_of_the_raw_folders(
  tmp_path, run_prepare
):
  write_ssv1(tmp_path / "raw", train=7)
  (tmp_path / "raw" / "20bn-something-something-v1" / "train6" / "00004.jpg").unlink()  # a gap
  done = run_prepare(
    "--dataset=ssv1",
    f"--manual_dir={tmp_path / 'raw'}",
    f"--data_dir={tmp_path / 'out'}",
    "--resize_hw=40,48",
    "--workers=2",
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert "train: 6 videos written, 1 skipped" in done.stdout
  assert "--config.dataset.tfds_name=something_something_v1/40x48" in done.stdout
  build = tmp_path / "out" / "something_something_v1" / "40x48" / "1.0.0"
  skipped = (build / "skipped.txt").read_text().splitlines()
  assert (
    len(skipped) == 1
    and skipped[0].startswith("train\ttrain6\t")
    and "00004.jpg is missing" in skipped[0]
  )

  records = plain_records("something_something_v1/40x48", "train", tmp_path / "out")
  assert [(r[0], r[1], r[3], r[4]) for r in records] == [
    (f"train{i}", i % 2, 0, 10) for i in range(6)
  ]
  info = tfds.builder("something_something_v1/40x48", data_dir=tmp_path / "out").info
  assert (
    info.features["label"].names
    == (tmp_path / "raw" / "something-something-v1-labels.csv").read_text().split("\n")[:2]
  )
  for video_id, _, frames, _, _ in records[:2]:
    assert frames.shape == (10, 40, 48, 3)
    for t in (0, 9):  # PIL's resize of the raw JPEG, against the stored JPEG as TFDS decodes it
      raw = Image.open(
        tmp_path / "raw" / "20bn-something-something-v1" / video_id / f"{t + 1:05d}.jpg"
      )
      expected = np.asarray(raw.convert("RGB").resize((48, 40), Image.BILINEAR), np.float32)
      assert np.abs(frames[t] - expected).mean() < 3.0

  raw, built = (sources.build_source(tiny_config(tmp_path / d)) for d in ("raw", "out"))
  raw_batch, built_batch = next(raw.eval_batches(4)), next(built.eval_batches(4))
  for key in ("ids", "labels", "frame_indices", "mask"):
    np.testing.assert_array_equal(raw_batch[key], built_batch[key])
  # Stored at 40x48 by PIL and re-encoded, against TF's resize of the raw JPEGs.
  assert (
    np.abs(raw_batch["clips"].astype(np.int32) - built_batch["clips"]).mean() < 1.7
  )  # pixel levels
  first = built.train_iterator(0, 4)
  batches = [next(first) for _ in range(3)]
  resumed = next(sources.build_source(tiny_config(tmp_path / "out")).train_iterator(2, 4))
  np.testing.assert_array_equal(resumed["clips"], batches[2]["clips"])
  assert "train6" not in np.concatenate([b["ids"] for b in batches])

  again = run_prepare(
    "--dataset=ssv1",
    f"--manual_dir={tmp_path / 'raw'}",
    f"--data_dir={tmp_path / 'out'}",
    "--resize_hw=40,48",
    "--workers=1",
  )
  assert again.returncode == 0 and "already built" in again.stdout
  # A second build of another size: training must be told which.
  assert (
    run_prepare(
      "--dataset=ssv1",
      f"--manual_dir={tmp_path / 'raw'}",
      f"--data_dir={tmp_path / 'out'}",
      "--resize_hw=32,40",
      "--workers=1",
    ).returncode
    == 0
  )
  with pytest.raises(
    ValueError,
    match=r"several builds of something_something_v1 \(something_something_v1/32x40:1.0.0, "
    r"something_something_v1/40x48:1.0.0\): choose one with --config.dataset.tfds_name",
  ):
    sources.build_source(tiny_config(tmp_path / "out"))
  config = tiny_config(tmp_path / "out")
  config.dataset.tfds_name = "something_something_v1/40x48"
  np.testing.assert_array_equal(
    next(sources.build_source(config).eval_batches(4))["clips"], built_batch["clips"]
  )
  config.dataset.data_dir = str(
    tmp_path / "out" / "something_something_v1"
  )  # the dataset's own directory
  np.testing.assert_array_equal(
    next(sources.build_source(config).eval_batches(4))["clips"], built_batch["clips"]
  )
  config.dataset.tfds_name = "something_something_v1/40x48:2.0.0"
  with pytest.raises(
    ValueError, match=r"something_something_v1/40x48:2.0.0 is not built in .* \(built there: "
  ):
    sources.build_source(config)
  config.dataset.data_dir = str(
    tmp_path / "out" / "something_something_v1" / "32x40" / "1.0.0"
  )  # one build itself
  config.dataset.tfds_name = ""
  assert next(sources.build_source(config).eval_batches(4))["ids"].tolist()[:3] == [
    "validation0",
    "validation1",
    "validation2",
  ]


def test_built_webm_videos_hold_every_frame(tmp_path, run_prepare):
  """SSv2 layout: VP9 webm files and their label JSON; one corrupt video is skipped."""
  if "libvpx-vp9" not in __import__("av").codecs_available:
    pytest.skip("this PyAV build has no VP9 encoder")
  raw = tmp_path / "raw"
  (raw / "20bn-something-something-v2").mkdir(parents=True)
  names = {"Moving something left": "0", "Moving something right": "1"}
  (raw / "something-something-v2-labels.json").write_text(json.dumps(names))
  for split, ids in (("train", ["1", "2", "3"]), ("validation", ["4"])):
    entries = [
      {"id": i, "template": ["Moving [something] left", "Moving [something] right"][int(i) % 2]}
      for i in ids
    ]
    (raw / f"something-something-v2-{split}.json").write_text(json.dumps(entries))
  for i in ("1", "2", "4"):
    encode(raw / "20bn-something-something-v2" / f"{i}.webm", moving_square(12), "libvpx-vp9")
  (raw / "20bn-something-something-v2" / "3.webm").write_bytes(b"not a video at all" * 50)
  done = run_prepare(
    "--dataset=ssv2", f"--manual_dir={raw}", f"--data_dir={tmp_path / 'out'}", "--resize_hw=0"
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert (
    "3.webm"
    in (
      tmp_path / "out" / "something_something_v2" / "original" / "1.0.0" / "skipped.txt"
    ).read_text()
  )
  records = plain_records("something_something_v2/original", "train", tmp_path / "out")
  assert [(r[0], r[1], r[4]) for r in records] == [("1", 1, 12), ("2", 0, 12)]
  frames = records[0][2]
  assert frames.shape == (12, 64, 64, 3)
  columns = [np.argmax(f[28, :, 0] > 150) for f in frames]  # the square still moves 4 px a frame
  np.testing.assert_allclose(columns, 4 * np.arange(12), atol=1)


def _assert_frames_close(stored, expected, tolerance=3.0):
  """Stored JPEG frames (as TFDS decodes them) against the frames they were made from: mean
  absolute difference in 0-255 levels (a frame of another time or clip differs by far more)."""
  assert stored.shape == expected.shape
  assert np.abs(stored.astype(np.float32) - expected.astype(np.float32)).mean() < tolerance


def test_built_diving48_finegym_and_list_layouts_hold_their_frames(tmp_path, run_prepare):
  """Diving-48 (mp4 with each dive's frame range), FineGym (mp4 clips, the release's list names)
  and the TSM-style lists (frame folders), read back with plain tfds.data_source."""
  from input_pipeline import frames as frame_io

  clips = {name: moving_square(n, size=32) for name, n in (("d1", 10), ("d2", 6), ("d3", 8))}
  diving = tmp_path / "diving48"
  (diving / "rgb").mkdir(parents=True)
  for name, clip in clips.items():
    encode(diving / "rgb" / f"{name}.mp4", clip, "mpeg4")
  (diving / "Diving48_V2_train.json").write_text(
    json.dumps(
      [
        {"vid_name": "d1", "label": 3, "start_frame": 2, "end_frame": 8},
        {"vid_name": "d2", "label": 47},
      ]
    )
  )
  (diving / "Diving48_V2_test.json").write_text(
    json.dumps([{"vid_name": "d3", "label": 0, "start_frame": 0, "end_frame": 4}])
  )
  done = run_prepare(
    "--dataset=diving48",
    f"--manual_dir={diving}",
    f"--data_dir={tmp_path / 'out'}",
    "--resize_hw=0",
  )
  assert done.returncode == 0, done.stderr[-3000:]
  records = plain_records("diving48/original", "train", tmp_path / "out")
  assert [(r[0], r[1], r[3], r[4]) for r in records] == [("d1", 3, 2, 6), ("d2", 47, 0, 6)]
  decoded = frame_io.decode_video(diving / "rgb" / "d1.mp4")  # PyAV, every frame
  _assert_frames_close(records[0][2], decoded[2:8])
  assert [
    (r[0], r[3], r[4]) for r in plain_records("diving48/original", "validation", tmp_path / "out")
  ] == [("d3", 0, 4)]

  gym = tmp_path / "finegym"
  gym.mkdir()
  for name, clip in clips.items():
    encode(gym / f"{name}_A_0001_0002.mp4", clip, "mpeg4")
  (gym / "gym99_train_element_v1.1.txt").write_text("d1_A_0001_0002 98\nd2_A_0001_0002 0\n")
  (gym / "gym99_val_element.txt").write_text("d3_A_0001_0002 5\n")
  done = run_prepare(
    "--dataset=finegym",
    f"--manual_dir={gym}",
    f"--data_dir={tmp_path / 'out'}",
    "--resize_hw=16,24",
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert "--config.dataset.tfds_name=finegym/gym99_16x24" in done.stdout
  records = plain_records("finegym/gym99_16x24", "train", tmp_path / "out")
  assert [(r[0], r[1], r[3], r[4]) for r in records] == [
    ("d1_A_0001_0002", 98, 0, 10),
    ("d2_A_0001_0002", 0, 0, 6),
  ]
  resized = [
    np.asarray(Image.fromarray(f).resize((24, 16), Image.BILINEAR))
    for f in frame_io.decode_video(gym / "d2_A_0001_0002.mp4")
  ]
  _assert_frames_close(
    records[1][2], np.stack(resized), tolerance=5.0
  )  # JPEG's 8x8 blocks at 16x24
  assert (
    np.abs(records[1][2].astype(np.float32) - np.stack(resized)[::-1]).mean() > 10
  )  # time reversed: far

  lists = tmp_path / "lists"
  for name, clip in clips.items():
    write_folder(lists / "frames" / name, clip, range(1, len(clip) + 1))
  (lists / "train.txt").write_text("/Dataset/frames/d1 10 1\n/Dataset/frames/d2 6 0\n")
  (lists / "val.txt").write_text("/Dataset/frames/d3 8 1\n")
  done = run_prepare(
    "--dataset=list",
    f"--manual_dir={lists}",
    f"--data_dir={tmp_path / 'out'}",
    "--num_classes=2",
    "--train_list=train.txt",
    "--eval_list=val.txt",
    "--strip_prefix=/Dataset/",
    "--resize_hw=0",
  )
  assert done.returncode == 0, done.stderr[-3000:]
  name = done.stdout.split("--config.dataset.tfds_name=")[1].split()[0]
  records = plain_records(name, "train", tmp_path / "out")
  assert [(r[0], r[1], r[3], r[4]) for r in records] == [("d1", 1, 0, 10), ("d2", 0, 0, 6)]
  _assert_frames_close(records[0][2], clips["d1"])


def test_unusable_and_contradictory_inputs_stop_with_their_reason(tmp_path, run_prepare):
  write_ssv1(tmp_path / "raw", train=2, validation=1)
  for folder in (tmp_path / "raw" / "20bn-something-something-v1").iterdir():
    if folder.name.startswith("validation"):
      (folder / "00001.jpg").unlink()
  done = run_prepare(
    "--dataset=ssv1",
    f"--manual_dir={tmp_path / 'raw'}",
    f"--data_dir={tmp_path / 'out'}",
    "--resize_hw=0",
  )
  assert done.returncode == 1 and "no usable video in the validation split" in done.stderr
  assert not list((tmp_path / "out").glob("**/dataset_info.json"))

  data = tmp_path / "list"
  (data / "a").mkdir(parents=True)
  (data / "train.txt").write_text("a 10 0\n")
  (data / "val.txt").write_text("a 10 1\n")
  args = [
    "--dataset=list",
    f"--manual_dir={data}",
    f"--data_dir={tmp_path / 'o2'}",
    "--num_classes=2",
    "--train_list=train.txt",
    "--eval_list=val.txt",
  ]
  done = run_prepare(*args)
  assert (
    done.returncode == 2
    and "video a is labelled 0 in the train list and 1 in the validation list" in done.stderr
  )
  (data / "val.txt").write_text("../outside 10 1\n")
  done = run_prepare(*args)
  assert done.returncode == 2 and "leaves the data directory" in done.stderr
  (data / "val.txt").write_text("a 10 5\n")
  done = run_prepare(*args)
  assert done.returncode == 2 and "label 5 is outside the 2 classes" in done.stderr
  done = run_prepare(*args[:3])
  assert (
    done.returncode == 2
    and "--dataset=list needs --num_classes, --train_list and --eval_list" in done.stderr
  )
  # Building into a bucket fails only after a whole split is converted (ArrayRecord writes local
  # files): refused before any work, in one line that says what to do instead.
  done = run_prepare(
    "--dataset=ssv1", f"--manual_dir={tmp_path / 'raw'}", "--data_dir=gs://bucket/tfds"
  )
  assert done.returncode == 2
  assert done.stderr.strip().splitlines()[-1] == (
    "error: --data_dir=gs://bucket/tfds: a build is written to a local (or mounted) directory; "
    "build there, then "
    "copy it: gcloud storage cp -r DIR/something_something_v1 gs://bucket/tfds/ (training reads "
    "builds from gs://)"
  )


def test_a_data_dir_holding_another_dataset_is_refused_in_one_line(tmp_path, run_prepare):
  write_ssv1(tmp_path / "raw", train=2, validation=1)
  assert (
    run_prepare(
      "--dataset=ssv1",
      f"--manual_dir={tmp_path / 'raw'}",
      f"--data_dir={tmp_path / 'out'}",
      "--resize_hw=40,48",
    ).returncode
    == 0
  )
  config = tiny_config(tmp_path / "out")
  config.dataset.name = "ssv2"
  with pytest.raises(
    ValueError,
    match=r"holds the TFDS datasets \['something_something_v1'\], not "
    r"'something_something_v2'",
  ):
    sources.build_source(config)
  config.dataset.data_dir = str(tmp_path / "out" / "something_something_v1" / "40x48" / "1.0.0")
  with pytest.raises(
    ValueError, match="holds a build of 'something_something_v1', not 'something_something_v2'"
  ):
    sources.build_source(config)


@pytest.mark.parametrize(
  "content,message",
  [
    (b'[{"id": "1", "template": }]', "something-something-v2-train.json:1:26: not valid JSON"),
    (
      b'[{"template": "Moving [something] up"}]',
      "something-something-v2-train.json entry 1: needs an id",
    ),
    (b"[\xff]", "something-something-v2-train.json:1: byte 0xff at offset 1 is not UTF-8"),
  ],
)
def test_malformed_label_file_is_one_line_naming_it_with_exit_2(
  tmp_path, run_prepare, content, message
):
  (tmp_path / "something-something-v2-labels.json").write_text('{"Moving something up": "0"}')
  (tmp_path / "something-something-v2-validation.json").write_text(
    '[{"id": "2", "template": "Moving something up"}]'
  )
  (tmp_path / "something-something-v2-train.json").write_bytes(content)
  done = run_prepare("--dataset=ssv2", f"--manual_dir={tmp_path}", f"--data_dir={tmp_path / 'out'}")
  (line,) = done.stderr.strip().splitlines()
  assert done.returncode == 2 and line.startswith(f"error: {tmp_path}/{message}")


def children_of(pid: int) -> set[int]:
  """The live processes whose parent is `pid` (Linux /proc; zombies count as gone)."""
  found = set()
  for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
    try:
      fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
      continue
    if int(fields[1]) == pid and fields[0] != "Z":
      found.add(int(stat.parent.name))
  return found


def alive(pid: int) -> bool:
  try:
    return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


@pytest.mark.slow  # a process killed with its workers running
@pytest.mark.skipif(
  not pathlib.Path("/proc/self/stat").exists(), reason="reads processes from Linux /proc"
)
def test_sigkill_of_prepare_leaves_no_worker_behind(tmp_path):
  write_ssv1(tmp_path / "raw", train=40, frames=30)
  command = [
    sys.executable,
    "-m",
    "input_pipeline.prepare",
    "--dataset=ssv1",
    f"--manual_dir={tmp_path / 'raw'}",
    f"--data_dir={tmp_path / 'out'}",
    "--workers=2",
  ]
  parent = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline, workers = time.time() + 300, set()
  while parent.poll() is None and time.time() < deadline:  # both workers started and converting
    workers = children_of(parent.pid)
    if len(workers) >= 2 and list(
      (tmp_path / "out").glob("downloads/stss_jax_conversions/*/train/*.pkl")
    ):
      break
    time.sleep(0.2)
  assert parent.poll() is None and workers, "prepare ended before it could be killed"
  parent.send_signal(signal.SIGKILL)
  parent.wait()
  time.sleep(5)
  assert not [pid for pid in workers if alive(pid)], (
    f"processes {workers} of the killed prepare still run"
  )
  # Nothing half-written looks whole: no build is found, and a rerun builds the same dataset.
  config = tiny_config(tmp_path / "out")
  with pytest.raises(
    ValueError, match="something_something_v1 is not built in .*built there: nothing complete"
  ):
    sources.build_source(config)
  # The rerun converts only what the killed build had not, and writes every record as a whole build
  # does.
  kept = sorted((tmp_path / "out").glob("downloads/stss_jax_conversions/*/train/*.pkl"))
  converted_before = len(kept)
  assert 0 < converted_before < 40
  # Marks the first kept result (its frames in reverse order), to see that the rerun reads it back.
  first = pickle.loads(kept[0].read_bytes())
  kept[0].write_bytes(pickle.dumps(dataclasses.replace(first, frames=first.frames[::-1])))
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-3000:]
  assert (
    f"train: {converted_before} of 40 videos were converted by an earlier build that did not finish"
    in done.stdout
  ), done.stdout
  assert "train: 40 videos written, 0 skipped" in done.stdout
  assert not list(
    (tmp_path / "out").glob("downloads/stss_jax_conversions/*")
  )  # removed once complete
  # Record for record what a build that was never interrupted writes.
  prepare.prepare("ssv1", str(tmp_path / "raw"), str(tmp_path / "whole"), workers=1)
  resumed, whole = (
    tfds.data_source("something_something_v1", split="train", data_dir=tmp_path / d)
    for d in ("out", "whole")
  )
  assert len(resumed) == len(whole) == 40
  for i, (a, b) in enumerate(zip(resumed, whole, strict=True)):
    assert a["video_id"] == b["video_id"]
    np.testing.assert_array_equal(
      a["frames"], b["frames"][::-1] if f"{i:07d}.pkl" == kept[0].name else b["frames"]
    )


@pytest.mark.parametrize(
  "args",
  [
    ["--dataset=ssv2", "--data_dir=/data/ssv2_download"],  # the old download flag
    ["--dataset=ssv2", "--manual_dir=/data/raw", "--output_dir=/data/tfds"],
  ],
  ids=["old --data_dir", "old --output_dir"],
)
def test_the_old_flags_stop_in_one_line_naming_the_new_ones(run_prepare, args):
  done = run_prepare(*args)
  assert done.returncode == 2
  (line,) = done.stderr.strip().splitlines()
  assert (
    "--manual_dir=RAW is the download (it was --data_dir) and --data_dir=DATA the TFDS " in line
  )
