"""The accelerator's crop resize (input_pipeline.crop_resize) against PIL's bilinear resize."""

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from input_pipeline.crop_resize import resize_crops


def smooth_frames(rng, frames, height, width):
  """Natural-ish content: PIL's resize of coarse noise (on raw noise, PIL's rounding between its
  two passes makes more one-level differences than on pictures)."""
  coarse = rng.uniform(0, 255, (frames, 6, 7, 3)).astype(np.uint8)
  return np.stack(
    [np.asarray(Image.fromarray(f).resize((width, height), Image.BILINEAR)) for f in coarse]
  )


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
def test_each_crop_is_pils_bilinear_resize_flipped_and_the_rest_of_its_window_is_never_read(xp):
  rng = np.random.default_rng(0)
  out = 32
  # (top, left, height, width): shrink .. enlarge, at the window's corners and inside it.
  boxes = np.array(
    [
      [0, 0, 48, 48],
      [6, 0, 42, 48],
      [3, 11, 36, 30],
      [16, 16, 32, 32],
      [28, 5, 20, 26],
      [0, 31, 48, 17],
    ],
    np.int32,
  )
  flips = np.array([False, True, False, True, True, False])
  windows = np.full(
    (len(boxes), 3, 48, 48, 3), 255, np.uint8
  )  # bright around the crops: any leak shows
  expected = []
  for i, (top, left, h, w) in enumerate(boxes):
    windows[i, :, top : top + h, left : left + w] = smooth_frames(rng, 3, h, w)
    crop = windows[i, :, top : top + h, left : left + w]
    resized = [np.asarray(Image.fromarray(f).resize((out, out), Image.BILINEAR)) for f in crop]
    expected.append(np.asarray(resized)[:, :, ::-1] if flips[i] else resized)
  got = np.asarray(resize_crops(xp.asarray(windows), boxes, out, flips, xp))
  assert got.shape == (len(boxes), 3, out, out, 3) and got.dtype == np.uint8
  difference = np.abs(got.astype(int) - np.asarray(expected, int))
  # PIL rounds to pixels between its horizontal and vertical passes, the resize once at the end.
  assert difference.max() <= 1 and difference.mean() < 0.25, [d.max() for d in difference]
  np.testing.assert_array_equal(
    got[3], windows[3, :, 16:48, 16:48][:, :, ::-1]
  )  # output-sized crop: mirrored only
  np.testing.assert_array_equal(
    np.asarray(resize_crops(xp.asarray(windows), boxes, out, xp=xp))[1], got[1][:, :, ::-1]
  )  # no flips given: none mirrored
  for i, (top, left, h, w) in enumerate(boxes[1:], 1):  # every pixel of a window outside its crop
    outside = np.ones((48, 48), bool)
    outside[top : top + h, left : left + w] = False
    windows[i][:, outside] = 0
  np.testing.assert_array_equal(
    np.asarray(resize_crops(xp.asarray(windows), boxes, out, flips, xp)), got
  )
