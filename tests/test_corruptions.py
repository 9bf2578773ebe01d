"""Corruptions of evaluation clips: each one's pixels on constructed clips, determinism, and the
evaluation and sweep commands that use them."""

import json

import numpy as np
import pytest

from input_pipeline import corruptions, normalization


def constant_clip(frames=8, size=40, value=0.2):
  return np.full((frames, size, size, 3), value, np.float32)


def rng(seed=0):
  return np.random.default_rng(seed)


@pytest.mark.parametrize("severity", corruptions.SEVERITIES)
def test_static_occlusion_covers_the_area_asked_for_in_the_same_place(severity):
  out = corruptions.corrupt_pixels(constant_clip(), "occlusion", severity, rng())
  covered = np.all(out == corruptions.GREY, axis=-1)
  area = covered.mean(axis=(1, 2))
  side = round(np.sqrt(corruptions.SEVERITY_AREA[severity - 1] * 40 * 40))
  np.testing.assert_allclose(area, side * side / 1600)
  assert (
    abs(area[0] - corruptions.SEVERITY_AREA[severity - 1]) <= 2 * side / 1600 + 1e-9
  )  # rounding of the side
  assert all(np.array_equal(covered[0], c) for c in covered)  # static
  ys, xs = np.nonzero(covered[0])
  assert ys.max() - ys.min() + 1 == side and xs.max() - xs.min() + 1 == side  # one square
  assert np.all(out[~covered] == 0.2)  # nothing else touched


def test_moving_occlusion_keeps_its_area_and_moves_in_a_straight_line():
  clip = constant_clip(frames=9)
  for seed in range(20):  # a draw whose start and end differ
    out = corruptions.corrupt_pixels(clip, "moving_occlusion", 3, rng(seed))
    covered = np.all(out == corruptions.GREY, axis=-1)
    corners = np.array([[np.nonzero(c)[0].min(), np.nonzero(c)[1].min()] for c in covered])
    if not np.array_equal(corners[0], corners[-1]):
      break
  side = round(np.sqrt(0.2 * 1600))
  np.testing.assert_allclose(covered.mean(axis=(1, 2)), side * side / 1600)
  expected = np.round(corners[0] + (corners[-1] - corners[0]) * (np.arange(9)[:, None] / 8))
  np.testing.assert_array_equal(corners, expected)


@pytest.mark.parametrize("severity", [1, 2, 4])
def test_motion_blur_spreads_a_moving_dot_along_its_path(severity):
  clip = np.zeros((8, 10, 20, 3), np.float32)
  for t in range(8):
    clip[t, 5, 2 * t] = 1.0  # a dot moving 2 pixels a frame
  out = corruptions.corrupt_pixels(clip, "motion_blur", severity, rng())
  for t in range(8):
    behind = range(max(0, t - severity), t + 1)
    expected = np.zeros((10, 20))
    for s in behind:
      expected[5, 2 * s] = 1.0 / len(behind)
    np.testing.assert_allclose(out[t, ..., 0], expected, atol=1e-6)


@pytest.mark.parametrize("severity", corruptions.SEVERITIES)
def test_dropped_frames_repeat_the_frame_before(severity):
  clip = np.stack([np.full((4, 4, 3), t / 10, np.float32) for t in range(8)])
  out = corruptions.corrupt_pixels(clip, "dropped_frames", severity, rng(severity))
  values = out[:, 0, 0, 0] * 10
  kept = [t for t in range(8) if np.isclose(values[t], t)]
  assert 0 in kept
  assert 8 - len(kept) == min(7, max(1, round(corruptions.SEVERITY_DROPPED[severity - 1] * 8)))
  for t in range(1, 8):  # each frame is itself or, dropped, the last frame shown before it
    assert np.isclose(values[t], t) or np.isclose(values[t], values[t - 1])


@pytest.mark.parametrize("severity", [1, 5])
def test_gaussian_noise_has_the_standard_deviation_asked_for(severity):
  out = corruptions.corrupt_pixels(
    constant_clip(size=64, value=0.5), "gaussian_noise", severity, rng()
  )
  sigma = corruptions.SEVERITY_SIGMA[severity - 1]
  noise = out - 0.5
  assert abs(noise.mean()) < 0.01
  # Severity 5 clips a little of the tail at 0 and 1: its spread is slightly smaller.
  assert sigma * 0.95 < noise.std() < sigma * 1.02
  assert out.min() >= 0 and out.max() <= 1


def test_the_same_video_is_corrupted_the_same_way_and_views_alike():
  # Mid-grey clips: the noise is never clipped at 0 or 1, so what was added can be compared.
  clips = normalization.normalize(np.full((3, 2, 6, 16, 16, 3), 0.5, np.float32))
  ids = ["a", "b", "a"]
  once = corruptions.corrupt_clips(clips, ids, "gaussian_noise", 3, seed=7)
  again = corruptions.corrupt_clips(clips, ids, "gaussian_noise", 3, seed=7)
  np.testing.assert_array_equal(once, again)
  noise = once - clips
  np.testing.assert_allclose(noise[0], noise[2], atol=1e-5)  # same id: same noise, in each view
  np.testing.assert_allclose(noise[0, 0], noise[0, 1], atol=1e-5)  # views alike
  assert not np.allclose(noise[0], noise[1], atol=1e-3)  # another id: another draw
  assert not np.allclose(
    corruptions.corrupt_clips(clips, ids, "gaussian_noise", 3, seed=8), once, atol=1e-3
  )


def test_unknown_corruptions_and_severities_name_the_key():
  with pytest.raises(ValueError, match="config.eval.corruption = 'fog' is unknown"):
    corruptions.check("fog", 3)
  with pytest.raises(ValueError, match="config.eval.severity = 6 must be one of"):
    corruptions.check("occlusion", 6)


@pytest.mark.slow  # a training run and two evaluations through main
def test_eval_mode_under_a_corruption_adds_its_own_row(tmp_path, capsys):
  import main

  tiny = ["main.py", "--config=configs/default.py:tiny", f"--workdir={tmp_path / 'run'}"]
  assert main.main([*tiny, "--config.total_steps=2", "--config.eval_every_steps=2"]) == 0
  assert (
    main.main(
      [*tiny, "--mode=eval", "--config.eval.corruption=occlusion", "--config.eval.severity=5"]
    )
    == 0
  )
  out = capsys.readouterr().out
  assert "validation under occlusion (severity 5): top-1" in out
  rows = [
    json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
  ]
  validation = [r for r in rows if r["split"] == "validation"]
  assert len(validation) == 2 and "corruption" not in validation[0]
  assert validation[1]["corruption"] == "occlusion" and validation[1]["severity"] == 5
  assert (tmp_path / "run" / "eval_validation_occlusion_5_step2.json").is_file()
  # The same evaluation again replaces its row; training refuses a corruption.
  assert (
    main.main(
      [*tiny, "--mode=eval", "--config.eval.corruption=occlusion", "--config.eval.severity=5"]
    )
    == 0
  )
  rows = [
    json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
  ]
  assert len([r for r in rows if r["split"] == "validation"]) == 2
  assert main.main([*tiny, "--config.eval.corruption=occlusion"]) == 1
  assert "is for --mode=eval" in capsys.readouterr().err

  from stss_jax import robustness

  assert (
    robustness.main(
      [
        "robustness",
        "--config=configs/default.py:tiny",
        f"--checkpoint={tmp_path / 'run' / 'model'}",
        f"--output={tmp_path / 'sweep'}",
        "--corruptions=occlusion,gaussian_noise",
        "--severities=1,5",
      ]
    )
    == 0
  )
  out = capsys.readouterr().out
  results = json.loads((tmp_path / "sweep" / robustness.RESULTS_FILE).read_text())
  assert len(results["rows"]) == 5 and "| occlusion | 5 |" in out
  swept = next(r for r in results["rows"] if (r["corruption"], r["severity"]) == ("occlusion", 5))
  assert swept["top1"] == pytest.approx(
    validation[1]["top1"]
  )  # the same corrupted clips as --mode=eval
  assert (tmp_path / "sweep" / robustness.PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  # A rerun finds every point done.
  assert (
    robustness.main(
      [
        "robustness",
        "--config=configs/default.py:tiny",
        f"--checkpoint={tmp_path / 'run' / 'model'}",
        f"--output={tmp_path / 'sweep'}",
        "--corruptions=occlusion,gaussian_noise",
        "--severities=1,5",
      ]
    )
    == 0
  )
  assert (
    json.loads((tmp_path / "sweep" / robustness.RESULTS_FILE).read_text())["rows"]
    == results["rows"]
  )


def test_uint8_pixel_clips_are_corrupted_as_pixels():
  """The video sources' uint8 evaluation clips come back as uint8, the noise in pixel levels."""
  clips = np.full((2, 2, 6, 16, 16, 3), 128, np.uint8)
  out = corruptions.corrupt_clips(clips, ["a", "b"], "gaussian_noise", 3, seed=7)
  assert out.dtype == np.uint8
  noise = out.astype(np.float32) - 128
  sigma = corruptions.SEVERITY_SIGMA[3 - 1] * 255
  assert sigma * 0.95 < noise[0].std() < sigma * 1.05
  np.testing.assert_array_equal(out[0, 0], out[0, 1])  # views alike
  assert not np.array_equal(out[0], out[1])
