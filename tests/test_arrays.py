"""Clip arrays: wrong files are refused with their name."""

import numpy as np
import pytest

from input_pipeline.arrays import load_clips


def test_good_clips_load_as_float32(tmp_path):
  np.save(tmp_path / "c.npy", np.zeros((2, 4, 8, 8, 3), np.float64))
  assert load_clips(tmp_path / "c.npy").dtype == np.float32


def test_uint8_pixels_load_normalised(tmp_path):
  pixels = np.random.default_rng(0).integers(0, 256, (2, 4, 8, 8, 3)).astype(np.uint8)
  np.save(tmp_path / "pixels.npy", pixels)
  # ImageNet statistics as docs/conventions.md states them, not read from the code.
  expected = (pixels / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
  loaded = load_clips(tmp_path / "pixels.npy")
  assert loaded.dtype == np.float32
  np.testing.assert_allclose(loaded, expected, atol=1e-5)


@pytest.mark.parametrize(
  "array,message",
  [
    (np.zeros((4, 8, 8, 3), np.float32), r"shape \(4, 8, 8, 3\)"),
    (np.zeros((1, 4, 8, 8, 1), np.float32), "expected clips"),
    (np.zeros((1, 4, 8, 8, 3), np.int32), "holds int32"),
  ],
)
def test_bad_clips_are_named(tmp_path, array, message):
  np.save(tmp_path / "bad.npy", array)
  with pytest.raises(ValueError, match=f"bad.npy.*{message}|bad.npy holds.*{message}"):
    load_clips(tmp_path / "bad.npy")
  with pytest.raises(FileNotFoundError, match="none.npy"):
    load_clips(tmp_path / "none.npy")
