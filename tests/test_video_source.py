"""Video datasets read from their official layout: SSv1 frame folders written by the test."""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tensorflow")

from configs import ssv1  # noqa: E402
from input_pipeline import sources  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
CLASSES = ["Pushing something from left to right", "Pushing something from right to left"]


def write_ssv1(root: pathlib.Path, train=6, validation=3, frames=10):
  """A tiny SSv1: a square moving right (class 0) or left (class 1), 64x80 JPEG frames."""
  root.mkdir(parents=True, exist_ok=True)
  (root / "something-something-v1-labels.csv").write_text("\n".join(CLASSES) + "\n")
  rng = np.random.default_rng(0)
  for split, count in (("train", train), ("validation", validation)):
    rows = []
    for i in range(count):
      video_id, label = f"{split}{i}", i % 2
      folder = root / "20bn-something-something-v1" / video_id
      folder.mkdir(parents=True)
      for t in range(frames):
        image = np.full((64, 80, 3), rng.integers(0, 100), np.uint8)
        x = 5 * t if label == 0 else 60 - 5 * t
        image[20:40, x:x + 16] = 220
        Image.fromarray(image).save(folder / f"{t + 1:05d}.jpg")
      rows.append(f"{video_id};{CLASSES[label]}")
    (root / f"something-something-v1-{split}.csv").write_text("\n".join(rows) + "\n")


def tiny_config(data_dir):
  config = ssv1.get_config()
  config.dataset.data_dir = str(data_dir)
  config.dataset.num_classes = 2
  config.dataset.no_flip_labels = (0, 1)
  config.input.num_frames = 4
  config.input.image_size = 32
  config.input.resize_hw = (40, 48)
  return config


def test_training_stream_is_deterministic_and_resumable(tmp_path):
  write_ssv1(tmp_path)
  source = sources.build_source(tiny_config(tmp_path))
  first = source.train_iterator(0, 4)
  batches = [next(first) for _ in range(3)]
  assert batches[0]["clips"].shape == (4, 4, 32, 32, 3) and batches[0]["clips"].dtype == np.float32
  assert set(batches[0]["labels"].tolist()) <= {0, 1}
  resumed = next(sources.build_source(tiny_config(tmp_path)).train_iterator(2, 4))
  np.testing.assert_array_equal(resumed["clips"], batches[2]["clips"])
  np.testing.assert_array_equal(resumed["labels"], batches[2]["labels"])
  # Two hosts of a global batch of 4 each read their own half of the same batch.
  halves = [next(source.train_iterator(2, 4, host, 2)) for host in range(2)]
  np.testing.assert_array_equal(np.concatenate([h["clips"] for h in halves]), batches[2]["clips"])


def test_evaluation_uses_centre_frames_and_pads_the_last_batch(tmp_path):
  write_ssv1(tmp_path)
  batches = list(sources.build_source(tiny_config(tmp_path)).eval_batches(2))
  assert [b["mask"].tolist() for b in batches] == [[1, 1], [1, 0]]
  assert [b["labels"].tolist() for b in batches][0] == [0, 1]
  # Class 0 moves right: the bright square's column grows over the four frames.
  red = batches[0]["clips"][0, :, 12, :, 0]
  columns = [int(np.argmax(row > row.mean() + 1)) for row in red]
  assert columns == sorted(columns) and columns[0] < columns[-1]


def test_broken_training_video_is_skipped_and_missing_data_dir_named(tmp_path):
  write_ssv1(tmp_path)
  (tmp_path / "20bn-something-something-v1" / "train0" / "00003.jpg").unlink()
  batch = next(sources.build_source(tiny_config(tmp_path)).train_iterator(0, 6))
  assert batch["clips"].shape[0] == 6
  config = tiny_config(tmp_path / "nowhere")
  with pytest.raises(ValueError, match="config.dataset.data_dir = .*nowhere.* is not a directory"):
    sources.build_source(config)


def test_main_trains_on_ssv1_frame_folders(tmp_path):
  write_ssv1(tmp_path / "data")
  overrides = [f"--config.dataset.data_dir={tmp_path / 'data'}", "--config.dataset.num_classes=2", "--config.dataset.no_flip_labels=(0,)",
               "--config.input.num_frames=4", "--config.input.image_size=32", "--config.input.resize_hw=(40,48)",
               "--config.model.depth=18", "--config.model.width=8", "--config.model.selfy.hidden=8",
               "--config.model.selfy.window=(3,3,3)", "--config.batch_size=4", "--config.total_steps=2",
               "--config.eval_every_steps=2", "--config.checkpoint_every_steps=2", "--config.log_every_steps=1"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  done = subprocess.run([sys.executable, "main.py", "--config=configs/ssv1.py", f"--workdir={tmp_path / 'run'}",
                         *overrides], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "validation: top-1" in done.stdout


def test_predict_prints_the_top5_classes_of_a_video(tmp_path):
  from stss_jax.models import build_model
  from stss_jax.train.checkpoints import save_model

  write_ssv1(tmp_path / "data")
  config = tiny_config(tmp_path / "data")
  config.model.depth, config.model.width, config.model.selfy.hidden = 18, 8, 8
  config.model.selfy.window = (3, 3, 3)
  save_model(tmp_path / "model", build_model(config), config)
  (tmp_path / "names.txt").write_text("\n".join(CLASSES) + "\n")
  overrides = ["--config.dataset.num_classes=2", "--config.input.num_frames=4", "--config.input.image_size=32",
               "--config.input.resize_hw=(40,48)", "--config.model.depth=18", "--config.model.width=8",
               "--config.model.selfy.hidden=8", "--config.model.selfy.window=(3,3,3)"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  video = tmp_path / "data" / "20bn-something-something-v1" / "validation0"
  done = subprocess.run([sys.executable, "-m", "stss_jax.predict", "--config=configs/ssv1.py", *overrides,
                         f"--checkpoint={tmp_path / 'model'}", f"--video={video}", f"--class_names={tmp_path / 'names.txt'}"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  lines = [line for line in done.stdout.splitlines() if "%" in line]
  assert len(lines) == 2 and all(any(c in line for c in CLASSES) for line in lines)
  done = subprocess.run([sys.executable, "-m", "stss_jax.predict", "--config=configs/ssv1.py", *overrides,
                         f"--checkpoint={tmp_path / 'model'}", f"--video={tmp_path / 'missing.webm'}"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 1 and "missing.webm: no such video file" in done.stderr


def test_multi_view_evaluation_and_an_ensemble_of_two_frame_counts(tmp_path):
  from stss_jax import ensemble
  from stss_jax.models import build_model
  from stss_jax.train.checkpoints import save_model

  write_ssv1(tmp_path / "data")
  members = []
  for frames, seed in ((4, 0), (6, 1)):
    config = tiny_config(tmp_path / "data")
    config.seed = seed
    config.input.num_frames, config.input.eval_clips, config.input.eval_crops = frames, 2, 3
    config.model.depth, config.model.width, config.model.selfy.hidden = 18, 8, 8
    config.model.selfy.window = (3, 3, 3)
    config.batch_size = 2
    save_model(tmp_path / f"model{frames}", build_model(config), config)
    members.append((config, str(tmp_path / f"model{frames}")))
  batch = next(sources.build_source(members[0][0]).eval_batches(2))
  assert batch["clips"].shape == (2, 6, 4, 32, 32, 3)
  views = batch["clips"][0]
  assert not np.array_equal(views[0], views[1])  # three crops differ
  assert not np.array_equal(views[0], views[3])  # two clips differ
  reports = ensemble.ensemble(members)
  assert len(reports) == 3
  first, second = (ensemble.model_probabilities(c, d)[0] for c, d in members)
  expected = np.mean(np.argmax((first + second) / 2, -1) == np.array([0, 1, 0]))
  assert reports["ensemble"]["top1"] == expected


def test_inspect_writes_what_the_model_sees_with_ids_and_frame_indices(tmp_path):
  write_ssv1(tmp_path / "data")
  overrides = [f"--config.dataset.data_dir={tmp_path / 'data'}", "--config.dataset.num_classes=2", "--config.dataset.no_flip_labels=()",
               "--config.input.num_frames=4", "--config.input.image_size=32", "--config.input.resize_hw=(40,48)",
               "--config.batch_size=2"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  done = subprocess.run([sys.executable, "-m", "input_pipeline.inspect", "--config=configs/ssv1.py", *overrides,
                         "--split=validation", "--num_batches=2", f"--output={tmp_path / 'b.npz'}",
                         f"--png={tmp_path / 'sheet.png'}"], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  batch = np.load(tmp_path / "b.npz")
  assert batch["clips"].shape == (3, 4, 32, 32, 3) and batch["clips"].dtype == np.float32
  assert batch["ids"].tolist() == ["validation0", "validation1", "validation2"]
  assert batch["labels"].tolist() == [0, 1, 0]
  # 10-frame videos, 4 segments: the official centre formula int(1.25 + 2.5 k).
  assert batch["frame_indices"].tolist() == [[1, 3, 6, 8]] * 3
  assert (tmp_path / "sheet.png").stat().st_size > 0
