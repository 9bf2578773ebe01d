"""The prepare tool: TFRecord shards of the tiny datasets the tests write, read back by an
independent TFRecord reader and by the training pipeline."""
import dataclasses
import json
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from input_pipeline import prepare, records, sources  # noqa: E402
from stss_jax.files import write_json_atomically  # noqa: E402
from tests.test_frames import encode, moving_square  # noqa: E402
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


def parsed_examples(shard):
  """Every example of a shard, read with tf.data's own TFRecord reader."""
  spec = {"id": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64),
          "frames": tf.io.VarLenFeature(tf.string), "first_frame": tf.io.FixedLenFeature([], tf.int64)}
  out = []
  for record in tf.data.TFRecordDataset(str(shard)):
    example = tf.io.parse_single_example(record, spec)
    out.append((example["id"].numpy().decode(), int(example["label"]), list(example["frames"].values.numpy()),
                int(example["first_frame"])))
  return out


def test_index_points_at_the_frames_a_tfrecord_reader_sees(tmp_path):
  rng = np.random.default_rng(0)
  videos = [records.PreparedVideo(f"v{i}", i % 3, [rng.bytes(int(rng.integers(1, 300))) for _ in range(n)], 2 * i, 4, 6)
            for i, n in enumerate([1, 5, 12, 3])]
  assert records.write_shard(tmp_path / "train-00000-of-00001.tfrecord", videos) == 4
  write_json_atomically(tmp_path / records.MANIFEST, {
      "format_version": records.FORMAT_VERSION, "dataset": "list", "class_names": ["a", "b", "c"],
      "resize_hw": None, "splits": {"train": {"shards": ["train-00000-of-00001.tfrecord"]}}})
  expected = parsed_examples(tmp_path / "train-00000-of-00001.tfrecord")
  assert [(e[0], e[1], e[3]) for e in expected] == [(v.video_id, v.label, v.first_frame) for v in videos]
  split = records.PreparedSplit(tmp_path, "train")
  assert len(split) == 4 and split.video_id(2) == "v2" and split.label(2) == 2
  for i, (_, _, frames, first) in enumerate(expected):
    chosen = np.arange(len(frames))[::-1]
    read, indices = split.read(i, lambda n: chosen if n == len(frames) else None)
    assert list(read) == [frames[k] for k in chosen]
    np.testing.assert_array_equal(indices, chosen + first)


@pytest.mark.slow  # two worker processes
def test_prepared_frame_folders_give_the_clips_of_the_raw_folders(tmp_path, run_prepare):
  write_ssv1(tmp_path / "raw", train=7)
  (tmp_path / "raw" / "20bn-something-something-v1" / "train6" / "00004.jpg").unlink()  # a gap
  done = run_prepare("--dataset=ssv1", f"--data_dir={tmp_path / 'raw'}", f"--output_dir={tmp_path / 'out'}",
                     "--num_classes=2", "--resize_hw=40,48", "--videos_per_shard=2", "--workers=2")
  assert done.returncode == 0, done.stderr[-3000:]
  assert "train: 6 videos written, 1 skipped" in done.stdout
  skipped = (tmp_path / "out" / "skipped.txt").read_text().splitlines()
  assert len(skipped) == 1 and skipped[0].startswith("train\ttrain6\t") and "00004.jpg is missing" in skipped[0]
  assert len(list((tmp_path / "out").glob("train-*.tfrecord"))) == 4

  raw, prepared = (sources.build_source(tiny_config(tmp_path / d)) for d in ("raw", "out"))
  raw_batch, prepared_batch = next(raw.eval_batches(4)), next(prepared.eval_batches(4))
  for key in ("ids", "labels", "frame_indices", "mask"):
    np.testing.assert_array_equal(raw_batch[key], prepared_batch[key])
  # Stored at 40x48 by PIL and re-encoded, against TF's resize of the raw JPEGs.
  assert np.abs(raw_batch["clips"] - prepared_batch["clips"]).mean() < 0.03
  first = prepared.train_iterator(0, 4)
  batches = [next(first) for _ in range(3)]
  resumed = next(sources.build_source(tiny_config(tmp_path / "out")).train_iterator(2, 4))
  np.testing.assert_array_equal(resumed["clips"], batches[2]["clips"])
  assert "train6" not in np.concatenate([b["ids"] for b in batches])


def test_rerun_skips_finished_shards_and_finishes_a_killed_run(tmp_path, run_prepare):
  write_ssv1(tmp_path / "raw", train=6)
  args = ["--dataset=ssv1", f"--data_dir={tmp_path / 'raw'}", f"--output_dir={tmp_path / 'out'}", "--num_classes=2",
          "--resize_hw=40,48", "--videos_per_shard=2", "--workers=1"]
  assert run_prepare(*args).returncode == 0
  out = tmp_path / "out"
  complete = {p.name: parsed_examples(p) for p in out.glob("*.tfrecord")}
  # A run killed inside shard 1: its files half-written under temporary names, no manifest.
  for path in out.glob("train-00001-of-00003.*"):
    path.unlink()
  (out / "train-00001-of-00003.tfrecord.tmp").write_bytes(b"partial")
  (out / records.MANIFEST).unlink()
  done = run_prepare(*args)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "5 shards; 4 already written, 2 videos to convert" in done.stdout
  assert not list(out.glob("*.tmp*"))
  # The same examples (a proto's map fields may be serialised in another order).
  assert {p.name: parsed_examples(p) for p in out.glob("*.tfrecord")} == complete
  batch = next(sources.build_source(tiny_config(out)).eval_batches(4))
  assert batch["ids"].tolist()[:3] == ["validation0", "validation1", "validation2"]
  changed = run_prepare(*args[:-2], "--videos_per_shard=3", "--workers=1")
  assert changed.returncode == 2 and "was prepared with other settings" in changed.stderr


def test_prepared_webm_videos_hold_every_frame(tmp_path, run_prepare):
  """SSv2 layout: VP9 webm files and their label JSON; one corrupt video is skipped."""
  if "libvpx-vp9" not in __import__("av").codecs_available:
    pytest.skip("this PyAV build has no VP9 encoder")
  raw = tmp_path / "raw"
  (raw / "20bn-something-something-v2").mkdir(parents=True)
  names = {"Moving something left": "0", "Moving something right": "1"}
  (raw / "something-something-v2-labels.json").write_text(json.dumps(names))
  for split, ids in (("train", ["1", "2", "3"]), ("validation", ["4"])):
    entries = [{"id": i, "template": ["Moving [something] left", "Moving [something] right"][int(i) % 2]} for i in ids]
    (raw / f"something-something-v2-{split}.json").write_text(json.dumps(entries))
  for i in ("1", "2", "4"):
    encode(raw / "20bn-something-something-v2" / f"{i}.webm", moving_square(12), "libvpx-vp9")
  (raw / "20bn-something-something-v2" / "3.webm").write_bytes(b"not a video at all" * 50)
  done = run_prepare("--dataset=ssv2", f"--data_dir={raw}", f"--output_dir={tmp_path / 'out'}", "--num_classes=2",
                     "--resize_hw=0")
  assert done.returncode == 0, done.stderr[-3000:]
  assert "3.webm" in (tmp_path / "out" / "skipped.txt").read_text()
  examples = parsed_examples(tmp_path / "out" / "train-00000-of-00001.tfrecord")
  assert [(e[0], e[1]) for e in examples] == [("1", 1), ("2", 0)]
  frames = np.stack([tf.io.decode_jpeg(f).numpy() for f in examples[0][2]])
  assert frames.shape == (12, 64, 64, 3)
  columns = [np.argmax(f[28, :, 0] > 150) for f in frames]  # the square still moves 4 px a frame
  np.testing.assert_allclose(columns, 4 * np.arange(12), atol=1)


def test_unusable_and_contradictory_inputs_stop_with_their_reason(tmp_path, run_prepare):
  write_ssv1(tmp_path / "raw", train=2, validation=1)
  for folder in (tmp_path / "raw" / "20bn-something-something-v1").iterdir():
    if folder.name.startswith("validation"):
      (folder / "00001.jpg").unlink()
  done = run_prepare("--dataset=ssv1", f"--data_dir={tmp_path / 'raw'}", f"--output_dir={tmp_path / 'out'}",
                     "--num_classes=2", "--resize_hw=0")
  assert done.returncode == 1 and "no usable video in the validation split" in done.stderr
  assert not (tmp_path / "out" / records.MANIFEST).exists()

  data = tmp_path / "list"
  (data / "a").mkdir(parents=True)
  (data / "train.txt").write_text("a 10 0\n")
  (data / "val.txt").write_text("a 10 1\n")
  done = run_prepare("--dataset=list", f"--data_dir={data}", f"--output_dir={tmp_path / 'o2'}", "--num_classes=2",
                     "--train_list=train.txt", "--eval_list=val.txt")
  assert done.returncode == 2 and "video a is labelled 0 in the train list and 1 in the validation list" in done.stderr
  (data / "val.txt").write_text("../outside 10 1\n")
  done = run_prepare("--dataset=list", f"--data_dir={data}", f"--output_dir={tmp_path / 'o2'}", "--num_classes=2",
                     "--train_list=train.txt", "--eval_list=val.txt")
  assert done.returncode == 2 and "leaves the data directory" in done.stderr
  (data / "val.txt").write_text("a 10 5\n")
  done = run_prepare("--dataset=list", f"--data_dir={data}", f"--output_dir={tmp_path / 'o2'}", "--num_classes=2",
                     "--train_list=train.txt", "--eval_list=val.txt")
  assert done.returncode == 2 and "label 5 is outside the 2 classes" in done.stderr


def test_prepared_data_of_another_dataset_is_refused(tmp_path, run_prepare):
  write_ssv1(tmp_path / "raw", train=2, validation=1)
  assert run_prepare("--dataset=ssv1", f"--data_dir={tmp_path / 'raw'}", f"--output_dir={tmp_path / 'out'}",
                     "--num_classes=2").returncode == 0
  config = tiny_config(tmp_path / "out")
  config.dataset.name = "ssv2"
  with pytest.raises(ValueError, match="holds prepared 'ssv1' data"):
    sources.build_source(config)


@pytest.mark.parametrize("content,message", [
    (b"[{\"id\": \"1\", \"template\": }]", "something-something-v2-train.json:1:26: not valid JSON"),
    (b"[{\"template\": \"Moving [something] up\"}]", "something-something-v2-train.json entry 1: needs an id"),
    (b"[\xff]", "something-something-v2-train.json:1: byte 0xff at offset 1 is not UTF-8"),
])
def test_malformed_label_file_is_one_line_naming_it_with_exit_2(tmp_path, run_prepare, content, message):
  (tmp_path / "something-something-v2-labels.json").write_text('{"Moving something up": "0"}')
  (tmp_path / "something-something-v2-validation.json").write_text('[{"id": "2", "template": "Moving something up"}]')
  (tmp_path / "something-something-v2-train.json").write_bytes(content)
  done = run_prepare("--dataset=ssv2", f"--data_dir={tmp_path}", f"--output_dir={tmp_path / 'out'}", "--num_classes=1")
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
@pytest.mark.skipif(not pathlib.Path("/proc/self/stat").exists(), reason="reads processes from Linux /proc")
def test_sigkill_of_prepare_leaves_no_worker_behind(tmp_path):
  write_ssv1(tmp_path / "raw", train=40, frames=30)
  command = [sys.executable, "-m", "input_pipeline.prepare", "--dataset=ssv1", f"--data_dir={tmp_path / 'raw'}",
             f"--output_dir={tmp_path / 'out'}", "--num_classes=2", "--videos_per_shard=1", "--workers=2"]
  parent = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline, workers = time.time() + 300, set()
  while parent.poll() is None and time.time() < deadline:  # both workers started and converting
    workers = children_of(parent.pid)
    if len(workers) >= 2 and list((tmp_path / "out").glob("*.tfrecord")):
      break
    time.sleep(0.2)
  assert parent.poll() is None and workers, "prepare ended before it could be killed"
  parent.send_signal(signal.SIGKILL)
  parent.wait()
  time.sleep(5)
  assert not [pid for pid in workers if alive(pid)], f"processes {workers} of the killed prepare still run"
