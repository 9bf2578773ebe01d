"""Sliding windows over long videos: where they lie, the frames they read, and predict's report."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from configs import default
from input_pipeline import frames, normalization, synthetic, windows
from stss_jax import model_dir, predict
from stss_jax.models import build_model
from tests.test_frames import encode

av = pytest.importorskip("av")


def numbered_clip(num_frames, size=32):
  """Frame t shows a bright column at x = t % size and its number in the red channel of a block."""
  clip = np.full((num_frames, size, size, 3), 30, np.uint8)
  for t in range(num_frames):
    clip[t, :, t % size] = 230
    clip[t, :8, :8, 0] = 2 * t
  return clip


@pytest.mark.parametrize(
  "num_frames,length,stride,expected",
  [
    (10, 4, 3, [(0, 4), (3, 7), (6, 10)]),  # the stride lands on the end
    (11, 4, 3, [(0, 4), (3, 7), (6, 10), (7, 11)]),  # one more window ends at the last frame
    (3, 4, 2, [(0, 3)]),  # shorter than a window
    (8, 8, 1, [(0, 8)]),
    (9, 4, 8, [(0, 4), (5, 9)]),  # a stride longer than the window skips frames
  ],
)
def test_window_spans(num_frames, length, stride, expected):
  assert windows.spans(num_frames, length, stride) == expected


def test_spans_in_frames_and_seconds():
  assert windows.parse_span("64", None, "window") == 64
  assert windows.parse_span("2.5s", 12.0, "window") == 30
  with pytest.raises(ValueError, match="--window=2s is in seconds, .* give --fps"):
    windows.parse_span("2s", None, "window")
  with pytest.raises(ValueError, match="--stride=soon: give frames"):
    windows.parse_span("soon", 12.0, "stride")
  with pytest.raises(ValueError, match="less than one frame"):
    windows.parse_span("0.01s", 12.0, "stride")


def test_windows_of_a_video_file_are_the_frames_they_sample(tmp_path):
  path = encode(tmp_path / "long.mp4", numbered_clip(50), "mpeg4", fps=10)
  whole = frames.decode_video(path)  # every frame, decoded at once (tests/test_frames.py)
  video = windows.LongVideo(path)
  assert (video.num_frames, video.fps) == (50, 10.0)
  planned = windows.plan(video.num_frames, 12, 5, lambda n: np.arange(0, n, 3))
  assert [(w.start, w.end) for w in planned] == [
    (0, 12),
    (5, 17),
    (10, 22),
    (15, 27),
    (20, 32),
    (25, 37),
    (30, 42),
    (35, 47),
    (38, 50),
  ]
  read = list(video.read(planned))
  assert [w for w, _ in read] == planned
  for window, sampled in read:
    np.testing.assert_array_equal(window.indices, window.start + np.arange(0, 12, 3))
    np.testing.assert_array_equal(sampled, whole[window.indices])


def test_a_truncated_webm_gives_the_windows_of_what_is_left(tmp_path):
  if "libvpx-vp9" not in av.codecs_available:
    pytest.skip("this PyAV build has no vp9 encoder")
  path = encode(tmp_path / "long.webm", numbered_clip(40), "libvpx-vp9", fps=10)
  data = path.read_bytes()
  path.write_bytes(data[: len(data) * 2 // 3])
  video = windows.LongVideo(path)
  assert 8 < video.num_frames < 40  # WebM headers hold no count: the packets left are counted
  planned = windows.plan(video.num_frames, 8, 8, lambda n: np.arange(n))
  read = list(video.read(planned))
  assert len(read) == len(planned) and all(f.shape == (8, 32, 32, 3) for _, f in read)


def test_frames_a_header_promises_but_the_file_lacks_repeat_the_last_frame(tmp_path, monkeypatch):
  path = encode(tmp_path / "short.mp4", numbered_clip(20), "mpeg4", fps=10)
  whole = frames.decode_video(path)
  monkeypatch.setattr(windows, "_count_frames", lambda _: (30, 10.0))
  video = windows.LongVideo(path)
  planned = windows.plan(video.num_frames, 10, 10, lambda n: np.arange(n))
  read = list(video.read(planned))
  assert [(w.start, w.end) for w, _ in read] == [(0, 10), (10, 20), (20, 30)]
  np.testing.assert_array_equal(read[1][1], whole[10:20])
  np.testing.assert_array_equal(read[2][1], np.repeat(whole[19:20], 10, axis=0))


def test_unreadable_long_videos_are_named(tmp_path):
  (tmp_path / "notes.mp4").write_text("not a video")
  with pytest.raises(frames.UnreadableVideoError, match="notes.mp4: cannot be decoded"):
    windows.LongVideo(tmp_path / "notes.mp4")
  with pytest.raises(frames.UnreadableVideoError, match="gone.mp4: no such video file"):
    windows.LongVideo(tmp_path / "gone.mp4")


def write_folder(folder, clip):
  folder.mkdir(parents=True)
  for t, image in enumerate(clip):
    Image.fromarray(image).save(folder / f"{t + 1:05d}.jpg", quality=95)
  return folder


def test_predict_windows_each_equal_the_window_cut_out_as_its_own_video(tmp_path, capsys):
  """The report of a frame folder with --window, against predict on folders holding each
  window's frames alone (the path without windows)."""
  config = default.get_config("tiny")
  model_dir.save(tmp_path / "model", build_model(config), config)
  clip = numbered_clip(30)
  long_video = write_folder(tmp_path / "long", clip)
  command = ["predict", "--config=configs/default.py:tiny", f"--checkpoint={tmp_path / 'model'}"]
  assert (
    predict.main(
      [
        *command,
        f"--video={long_video}",
        "--window=1s",
        "--stride=0.5s",
        "--fps=12",
        f"--json={tmp_path / 'report.json'}",
        "--batch_windows=3",
        f"--output={tmp_path / 'logits.npy'}",
      ]
    )
    == 0
  )
  out = capsys.readouterr().out
  report = json.loads((tmp_path / "report.json").read_text())
  spans = [(w["start_frame"], w["end_frame"]) for w in report["windows"]]
  assert spans == [(0, 12), (6, 18), (12, 24), (18, 30)]
  assert [w["start_s"] for w in report["windows"]] == [0.0, 0.5, 1.0, 1.5]
  assert "4 windows over 30 frames" in out and "1.50-    2.50 s" in out
  for (start, end), window in zip(spans, report["windows"]):
    cut = tmp_path / f"cut{start}"
    cut.mkdir()
    for t in range(start, end):
      shutil.copy(long_video / f"{t + 1:05d}.jpg", cut / f"{t - start + 1:05d}.jpg")
    assert predict.main([*command, f"--video={cut}", f"--json={cut}.json"]) == 0
    (alone,) = json.loads((tmp_path / f"{cut.name}.json").read_text())["windows"]
    assert [c["class"] for c in window["top"]] == [c["class"] for c in alone["top"]]
    np.testing.assert_allclose(
      [c["probability"] for c in window["top"]], [c["probability"] for c in alone["top"]], rtol=1e-5
    )
  # The average: each window's softmax (one view each in this config), averaged over the windows.
  logits = np.load(tmp_path / "logits.npy")
  assert logits.shape == (4, 6)
  probabilities = np.exp(logits - logits.max(-1, keepdims=True))
  average = (probabilities / probabilities.sum(-1, keepdims=True)).mean(0)
  assert [c["class"] for c in report["average"]["top"]] == list(np.argsort(-average)[:5])
  np.testing.assert_allclose(
    [c["probability"] for c in report["average"]["top"]], np.sort(average)[::-1][:5], rtol=1e-5
  )
  assert report["average"]["top"][0]["name"] == synthetic.CLASSES[int(np.argmax(average))]


def test_predict_window_errors_are_one_line(tmp_path, capsys):
  config = default.get_config("tiny")
  model_dir.save(tmp_path / "model", build_model(config), config)
  folder = write_folder(tmp_path / "long", numbered_clip(20))
  command = [
    "predict",
    "--config=configs/default.py:tiny",
    f"--checkpoint={tmp_path / 'model'}",
    f"--video={folder}",
  ]
  for flags_, message in (
    (["--window=2s"], "give --fps"),
    (["--stride=4"], "--stride needs --window"),
  ):
    assert predict.main([*command, *flags_]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert message in line


def test_a_demo_clip_saved_as_frames_reaches_the_model_as_the_source_drew_it(tmp_path):
  """predict --video on the demo config: frames the synthetic source drew, saved and read back,
  are the pixels the model sees (no resize or crop that the training clips never had)."""
  import tensorflow as tf

  config = default.get_config("tiny")
  data = synthetic.SyntheticMotion(
    num_frames=config.input.num_frames,
    image_size=config.input.image_size,
    classes=tuple(config.dataset.classes),
  )
  clip, _ = data.clip("validation", 0)
  folder = write_folder(tmp_path / "clip", normalization.to_uint8(clip))
  read_back = np.stack(
    [np.asarray(Image.open(path), np.float32) / 255 for path in sorted(folder.iterdir())]
  )
  source = predict.evaluation_source(config)
  video = windows.LongVideo(str(folder), config.dataset.frame_template, 12)
  ((_, frames_read),) = video.read(windows.plan(video.num_frames, None, None, source.eval_indices))
  (view,) = np.asarray(source.eval_views(tf.constant(frames_read), video.encoded))
  # TensorFlow's and PIL's JPEG decoders differ by a few levels (measured: mean 0.028, 99th
  # percentile 0.11 in normalised units); the 240x320 resize and crop this guards against gave
  # 0.40 and 2.3.
  difference = np.abs(normalization.model_input(view) - normalization.normalize(read_back))
  assert difference.mean() < 0.06 and np.percentile(difference, 99) < 0.25
