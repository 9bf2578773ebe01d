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
  return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BILINEAR)) for f in coarse])


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
def test_each_crop_is_pils_bilinear_resize_and_the_padding_is_never_read(xp):
  rng = np.random.default_rng(0)
  out = 32
  crop_hw = np.array([[48, 48], [42, 48], [36, 30], [32, 32], [20, 26], [48, 17]], np.int32)  # shrink .. enlarge
  padded = np.full((len(crop_hw), 3, 48, 48, 3), 255, np.uint8)  # bright padding: any leak shows
  expected = []
  for i, (h, w) in enumerate(crop_hw):
    padded[i, :, :h, :w] = smooth_frames(rng, 3, h, w)
    expected.append([np.asarray(Image.fromarray(f).resize((out, out), Image.BILINEAR)) for f in padded[i, :, :h, :w]])
  got = np.asarray(resize_crops(xp.asarray(padded), crop_hw, out, xp))
  assert got.shape == (len(crop_hw), 3, out, out, 3) and got.dtype == np.uint8
  difference = np.abs(got.astype(int) - np.asarray(expected, int))
  # PIL rounds to pixels between its horizontal and vertical passes, the resize once at the end.
  assert difference.max() <= 1 and difference.mean() < 0.25, [d.max() for d in difference]
  np.testing.assert_array_equal(got[3], padded[3, :, :out, :out])  # a crop of the output size stays as it is
  padded[1:, :, 47, 47] = 0  # the padding of every crop but the first, whole one: nothing changes
  np.testing.assert_array_equal(np.asarray(resize_crops(xp.asarray(padded), crop_hw, out, xp)), got)
