"""Video datasets read from their official layout: SSv1 frame folders written by the test."""

import pathlib

import jax
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tensorflow")

import main  # noqa: E402
from configs import default, ssv1  # noqa: E402
from input_pipeline import inspect, sources, synthetic  # noqa: E402
from stss_jax import ensemble, model_dir, predict  # noqa: E402
from stss_jax.models import build_model  # noqa: E402
from tests.test_frames import encode, moving_square  # noqa: E402

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
        image[20:40, x : x + 16] = 220
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
  assert batches[0]["clips"].shape == (4, 4, 32, 32, 3) and batches[0]["clips"].dtype == np.uint8
  assert set(batches[0]["labels"].tolist()) <= {0, 1}
  resumed = next(sources.build_source(tiny_config(tmp_path)).train_iterator(2, 4))
  np.testing.assert_array_equal(resumed["clips"], batches[2]["clips"])
  np.testing.assert_array_equal(resumed["labels"], batches[2]["labels"])
  # Two hosts of a global batch of 4 each read their own half of the same batch.
  halves = [next(source.train_iterator(2, 4, host, 2)) for host in range(2)]
  np.testing.assert_array_equal(np.concatenate([h["clips"] for h in halves]), batches[2]["clips"])


def test_resize_on_accelerator_ends_training_clips_at_the_frame_region(tmp_path):
  """The same stream with both resizes and the flip left to the step. The 64 x 80 frames are not
  at the resize size (40 x 48), so each clip is the region of its decoded frames that its crop's
  window (the largest multi-scale box, 40 x 40) reads, with its first_resize, the crop's box in
  the window and the flip. Resized by input_pipeline.crop_resize as the step resizes them, it is
  the CPU pipeline's clip within a level. It resumes exactly."""
  from input_pipeline.crop_resize import resize_crops, resize_regions

  write_ssv1(tmp_path)
  config = tiny_config(tmp_path)
  config.dataset.no_flip_labels = ()  # flips drawn, and left to the step
  cpu = next(sources.build_source(config).train_iterator(0, 6))
  config.input.resize_on_accelerator = True
  stream = sources.build_source(config).train_iterator(0, 6)
  deferred = [next(stream) for _ in range(3)]
  regions, first_resize = deferred[0]["clips"], deferred[0]["first_resize"]
  # Region bound per axis: ceil(40 x scale + 2 x scale + 3), scales 64 / 40 and 80 / 48.
  assert (
    regions.shape == (6, 4, 71, 73, 3)
    and regions.dtype == np.uint8
    and first_resize.shape == (6, 2, 3)
  )
  np.testing.assert_allclose(
    first_resize[:, :, 0], np.broadcast_to([64 / 40, 80 / 48], (6, 2)), rtol=1e-6
  )
  assert (first_resize[:, :, 2] <= [71, 73]).all() and (
    first_resize[:, :, 2] < [64, 80]
  ).any()  # not whole frames
  clips = resize_regions(regions, first_resize, (40, 40))
  boxes, flips = deferred[0]["crop_boxes"], deferred[0]["flips"]
  assert (
    boxes.shape == (6, 4) and flips.shape == (6,) and flips.dtype == bool and 0 < flips.sum() < 6
  )
  sides = {int(40 * s) for s in (1.0, 0.875, 0.75, 0.66)}
  assert set(boxes[:, 2:].ravel().tolist()) <= sides and len(set(map(tuple, boxes.tolist()))) > 1
  assert (boxes[:, :2] >= 0).all() and (boxes[:, :2] + boxes[:, 2:] <= 40).all()
  np.testing.assert_array_equal(deferred[0]["labels"], cpu["labels"])
  difference = np.abs(resize_crops(clips, boxes, 32, flips).astype(int) - cpu["clips"].astype(int))
  assert difference.max() <= 1 and difference.mean() < 0.1
  resumed = next(sources.build_source(config).train_iterator(2, 6))
  from input_pipeline import inspect  # draws the batch as the step resizes it

  config.batch_size = 6
  np.testing.assert_array_equal(
    inspect.collect(config, "train", 1)["clips"], resize_crops(clips, boxes, 32, flips)
  )
  for key in ("clips", "crop_boxes", "flips", "first_resize"):
    np.testing.assert_array_equal(resumed[key], deferred[2][key])
  config.input.randaugment_ops = 2
  with pytest.raises(
    ValueError, match="resize_on_accelerator = True needs config.input.randaugment_ops = 0"
  ):
    sources.build_source(config)


def test_frame_regions_are_sized_by_the_largest_of_several_videos(tmp_path):
  """Raw frames of unlike sizes (SSv1's widths vary): the region shape comes from the largest first
  frame among the sampled training videos, not from the first video alone, so that a clip of a
  wider video (train3, 64 x 120, after 64 x 80 ones) still leaves both resizes to the step; its
  clip is the CPU pipeline's within a level."""
  from input_pipeline.crop_resize import resize_crops, resize_regions

  write_ssv1(tmp_path)
  rng = np.random.default_rng(1)
  for frame in sorted((tmp_path / "20bn-something-something-v1" / "train3").iterdir()):
    Image.fromarray(rng.integers(0, 255, (64, 120, 3), np.uint8)).save(frame)
  config = tiny_config(tmp_path)
  cpu = next(sources.build_source(config).train_iterator(0, 6))
  config.input.resize_on_accelerator = True
  source = sources.build_source(config)
  # Width: ceil(40 x 2.5 + 2 x 2.5 + 3) for 120 / 48; the 64 x 80 videos alone would give 73.
  assert source.first_resize_region() == (71, 108)
  batch = next(source.train_iterator(0, 6))
  wide = list(batch["ids"]).index("train3")
  np.testing.assert_allclose(
    batch["first_resize"][wide, :, 0], [64 / 40, 120 / 48], rtol=1e-6
  )  # not the copy
  clips = resize_crops(
    resize_regions(batch["clips"], batch["first_resize"], (40, 40)),
    batch["crop_boxes"],
    32,
    batch["flips"],
  )
  difference = np.abs(clips.astype(int) - cpu["clips"].astype(int))
  assert difference.max() <= 1 and difference.mean() < 0.1


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


TINY_MODEL = [
  "--config.model.depth=18",
  "--config.model.width=8",
  "--config.model.selfy.hidden=8",
  "--config.model.selfy.window=(3,3,3)",
]
TINY_INPUT = [
  "--config.dataset.num_classes=2",
  "--config.input.num_frames=4",
  "--config.input.image_size=32",
  "--config.input.resize_hw=(40,48)",
]


def tiny_model_config(data_dir, frames=4, seed=0):
  config = tiny_config(data_dir)
  config.seed = seed
  config.input.num_frames = frames
  config.model.depth, config.model.width, config.model.selfy.hidden = 18, 8, 8
  config.model.selfy.window = (3, 3, 3)
  return config


@pytest.mark.slow  # the whole of main on video files; the fast tier covers its parts
@pytest.mark.parametrize("resize_on_accelerator", [False, True])
def test_main_trains_on_ssv1_frame_folders(tmp_path, capsys, resize_on_accelerator):
  write_ssv1(tmp_path / "data")
  status = main.main(
    [
      "main.py",
      "--config=configs/ssv1.py",
      f"--workdir={tmp_path / 'run'}",
      f"--config.dataset.data_dir={tmp_path / 'data'}",
      *TINY_INPUT,
      *TINY_MODEL,
      f"--config.input.resize_on_accelerator={resize_on_accelerator}",
      "--config.dataset.no_flip_labels=(0,)",
      "--config.batch_size=8",
      "--config.total_steps=2",
      "--config.eval_every_steps=2",
      "--config.checkpoint_every_steps=2",
      "--config.log_every_steps=1",
    ]
  )
  out, err = capsys.readouterr()
  assert status == 0, err[-3000:]
  assert "validation: top-1" in out


def test_predict_prints_the_top5_classes_of_a_video(tmp_path, capsys):
  write_ssv1(tmp_path / "data")
  config = tiny_model_config(tmp_path / "data")
  model_dir.save(tmp_path / "model", build_model(config), config)
  (tmp_path / "names.txt").write_text("\n".join(CLASSES) + "\n")
  video = tmp_path / "data" / "20bn-something-something-v1" / "validation0"
  command = [
    "predict",
    "--config=configs/ssv1.py",
    *TINY_INPUT,
    *TINY_MODEL,
    f"--checkpoint={tmp_path / 'model'}",
  ]
  assert (
    predict.main([*command, f"--video={video}", f"--class_names={tmp_path / 'names.txt'}"]) == 0
  )
  lines = [line for line in capsys.readouterr().out.splitlines() if "%" in line]
  assert len(lines) == 2 and all(any(c in line for c in CLASSES) for line in lines)
  assert predict.main([*command, f"--video={tmp_path / 'missing.webm'}"]) == 1
  assert "missing.webm: no such video file" in capsys.readouterr().err


def test_predict_on_a_video_with_the_demo_config(tmp_path, capsys):
  """The demo's config names no frame layout of its own; a video file still works, and a file
  that is no video is one line."""
  config = default.get_config("tiny")
  model_dir.save(tmp_path / "model", build_model(config), config)
  encode(tmp_path / "clip.mp4", moving_square(12), "mpeg4")
  (tmp_path / "notes.mp4").write_text("not a video")
  command = ["predict", "--config=configs/default.py:tiny", f"--checkpoint={tmp_path / 'model'}"]
  assert predict.main([*command, f"--video={tmp_path / 'clip.mp4'}"]) == 0
  lines = [line for line in capsys.readouterr().out.splitlines() if "%  " in line]
  assert len(lines) == 5 and all(line.split("%  ", 1)[1] in synthetic.CLASSES[:6] for line in lines)
  assert predict.main([*command, f"--video={tmp_path / 'notes.mp4'}"]) == 1
  (line,) = capsys.readouterr().err.strip().splitlines()
  assert line.startswith(f"error: {tmp_path / 'notes.mp4'}: cannot be decoded")


def softmax(logits):
  exponentials = np.exp(logits - logits.max(-1, keepdims=True))
  return exponentials / exponentials.sum(-1, keepdims=True)


@pytest.mark.slow  # two models evaluated over every view, then their ensemble
def test_multi_view_evaluation_and_an_ensemble_of_two_frame_counts(tmp_path):
  write_ssv1(tmp_path / "data")
  members = []
  for frames, seed in ((4, 0), (6, 1)):
    config = tiny_model_config(tmp_path / "data", frames, seed)
    config.input.eval_clips, config.input.eval_crops = 2, 3
    config.batch_size = 8  # one batch on the eight test devices, padded
    model_dir.save(tmp_path / f"model{frames}", build_model(config), config)
    members.append((config, str(tmp_path / f"model{frames}")))
  batch = next(sources.build_source(members[0][0]).eval_batches(2))
  assert batch["clips"].shape == (2, 6, 4, 32, 32, 3)
  views = batch["clips"][0]
  assert not np.array_equal(views[0], views[1])  # three crops differ
  assert not np.array_equal(views[0], views[3])  # two clips differ
  reports = ensemble.ensemble(members)

  # The paper's rule, applied here by hand to the views the pipeline gives: per model, the
  # softmax of every view's logits averaged over the views; the ensemble averages the models.
  labels = np.array([0, 1, 0])
  per_model = []
  for config, directory in members:
    model = build_model(config)
    model_dir.restore(directory, model, config)
    model.eval()
    videos = [
      clips
      for b in sources.build_source(config).eval_batches(2)
      for clips, keep in zip(b["clips"], b["mask"])
      if keep
    ]
    # uint8 views, normalised here with ImageNet statistics as docs/conventions.md states them
    clips = (np.concatenate(videos) / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    logits = jax.jit(lambda m, x: m(x))(
      model, clips.astype(np.float32)
    )  # (videos * 6 views, classes)
    per_model.append(softmax(np.asarray(logits, np.float64)).reshape(len(videos), 6, -1).mean(1))
  for report, probabilities in zip(list(reports.values())[:2], per_model):
    np.testing.assert_allclose(
      report["loss"], -np.log(probabilities[np.arange(3), labels]).mean(), rtol=1e-5
    )
  mean = (per_model[0] + per_model[1]) / 2
  np.testing.assert_allclose(
    reports["ensemble"]["loss"], -np.log(mean[np.arange(3), labels]).mean(), rtol=1e-5
  )
  assert reports["ensemble"]["top1"] == np.mean(mean.argmax(-1) == labels)


def test_inspect_writes_what_the_model_sees_with_ids_and_frame_indices(tmp_path, capsys):
  write_ssv1(tmp_path / "data")
  status = inspect.main(
    [
      "inspect",
      "--config=configs/ssv1.py",
      f"--config.dataset.data_dir={tmp_path / 'data'}",
      *TINY_INPUT,
      "--config.dataset.no_flip_labels=()",
      "--config.batch_size=2",
      "--split=validation",
      "--num_batches=2",
      f"--output={tmp_path / 'b.npz'}",
      f"--png={tmp_path / 'sheet.png'}",
    ]
  )
  assert status == 0, capsys.readouterr().err[-3000:]
  batch = np.load(tmp_path / "b.npz")
  assert batch["clips"].shape == (3, 4, 32, 32, 3) and batch["clips"].dtype == np.uint8
  assert batch["ids"].tolist() == ["validation0", "validation1", "validation2"]
  assert batch["labels"].tolist() == [0, 1, 0]
  # 10-frame videos, 4 segments: the official centre formula int(1.25 + 2.5 k).
  assert batch["frame_indices"].tolist() == [[1, 3, 6, 8]] * 3
  assert (tmp_path / "sheet.png").stat().st_size > 0
  # Training crops that the step resizes are resized here too, as the model will see them.
  status = inspect.main(
    [
      "inspect",
      "--config=configs/ssv1.py",
      f"--config.dataset.data_dir={tmp_path / 'data'}",
      *TINY_INPUT,
      "--config.dataset.no_flip_labels=()",
      "--config.batch_size=2",
      "--config.input.resize_on_accelerator=True",
      "--split=train",
      "--num_batches=1",
      f"--output={tmp_path / 'train.npz'}",
    ]
  )
  assert status == 0, capsys.readouterr().err[-3000:]
  assert np.load(tmp_path / "train.npz")["clips"].shape == (2, 4, 32, 32, 3)


def test_predict_normalises_uint8_pixel_clips_as_the_official_statistics_say():
  """The video sources' views are uint8: predict gives the logits of the clips normalised here,
  with ImageNet statistics as docs/conventions.md states them."""
  config = default.get_config("tiny")
  model = build_model(config)
  pixels = np.random.default_rng(0).integers(0, 256, (2, 4, 32, 32, 3)).astype(np.uint8)
  normalised = ((pixels / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).astype(np.float32)
  np.testing.assert_allclose(
    predict.predict(model, pixels), predict.predict(model, normalised), rtol=1e-4, atol=1e-5
  )
