"""Augmentation: crops from the official scale set and 13-point grid, flips, determinism."""
import itertools

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from input_pipeline import transforms  # noqa: E402


def coordinate_clip(height=240, width=320, frames=2):
  y, x = np.meshgrid(np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32), indexing="ij")
  image = np.stack([y, x, np.zeros_like(y)], axis=-1)
  return tf.constant(np.repeat(image[None], frames, axis=0))


def allowed_crops(height=240, width=320):
  """Every (top, left, crop_h, crop_w) the official GroupMultiScaleCrop can pick, restated."""
  sides = [int(min(height, width) * s) for s in (1, 0.875, 0.75, 0.66)]
  crops = set()
  for i, j in itertools.product(range(4), repeat=2):
    if abs(i - j) > 1:
      continue
    crop_w, crop_h = sides[i], sides[j]
    w_step, h_step = (width - crop_w) // 4, (height - crop_h) // 4
    offsets = [(0, 0), (4 * w_step, 0), (0, 4 * h_step), (4 * w_step, 4 * h_step), (2 * w_step, 2 * h_step),
               (0, 2 * h_step), (4 * w_step, 2 * h_step), (2 * w_step, 4 * h_step), (2 * w_step, 0),
               (w_step, h_step), (3 * w_step, h_step), (w_step, 3 * h_step), (3 * w_step, 3 * h_step)]
    crops |= {(y, x, crop_h, crop_w) for x, y in offsets}
  return crops


def test_multi_scale_crop_picks_only_official_crops_and_many_of_them():
  clip, allowed, seen = coordinate_clip(), allowed_crops(), set()
  for seed in range(200):
    out = transforms.multi_scale_crop(clip, tf.constant([seed, 7]), 224).numpy()
    # Pixel centres of the resized crop map back to the crop's coordinates (bilinear, linear ramp).
    first, last = out[0, 0, 0], out[0, -1, -1]
    scale_y, scale_x = (last[0] - first[0]) / 223, (last[1] - first[1]) / 223
    crop_h, crop_w = round(scale_y * 224), round(scale_x * 224)
    top, left = round(first[0] - (scale_y - 1) / 2), round(first[1] - (scale_x - 1) / 2)
    match = [c for c in allowed if abs(c[0] - top) <= 1 and abs(c[1] - left) <= 1
             and abs(c[2] - crop_h) <= 1 and abs(c[3] - crop_w) <= 1]
    assert match, (top, left, crop_h, crop_w)
    seen.add(match[0])
    np.testing.assert_array_equal(out[0], out[1])  # one crop for every frame
  assert len(seen) > 40


def test_flip_never_touches_protected_classes_and_flips_half_the_rest():
  clip = coordinate_clip(8, 8)
  flips = {label: sum(bool(transforms.maybe_flip(clip, tf.constant(label), tf.constant([s, 0]), (86, 87)).numpy()[0, 0, 0, 1] > 0)
                      for s in range(100)) for label in (86, 5)}
  assert flips[86] == 0
  assert 30 < flips[5] < 70


def test_train_transform_is_a_function_of_its_seed():
  clip = tf.constant(np.random.default_rng(0).integers(0, 255, (3, 100, 176, 3)), tf.uint8)
  a = transforms.train_transform(clip, tf.constant(3), tf.constant([1, 2]))
  b = transforms.train_transform(clip, tf.constant(3), tf.constant([1, 2]))
  c = transforms.train_transform(clip, tf.constant(3), tf.constant([1, 3]))
  assert a.shape == (3, 224, 224, 3) and a.dtype == tf.float32
  np.testing.assert_array_equal(a.numpy(), b.numpy())
  assert not np.array_equal(a.numpy(), c.numpy())


def test_eval_transform_is_the_normalised_centre_crop():
  clip = coordinate_clip()
  out = transforms.eval_transform(clip).numpy()
  expected = (np.stack([*np.meshgrid(np.arange(8, 232), np.arange(48, 272), indexing="ij"), np.zeros((224, 224))], -1)
              / 255.0 - transforms.MEAN) / transforms.STD
  np.testing.assert_allclose(out[0], expected, atol=1e-4)


def test_three_crop_views_sit_at_the_start_centre_and_end_of_the_longer_side():
  clip = coordinate_clip(frames=4)  # two clips of two frames
  views = transforms.eval_views(clip, 2, 3).numpy()
  assert views.shape == (6, 2, 224, 224, 3)
  pixel = views[:, 0, 0, 0] * transforms.STD + transforms.MEAN  # top-left (y, x) of each view
  np.testing.assert_allclose(pixel[:, 0] * 255, [8] * 6, atol=1e-3)
  np.testing.assert_allclose(pixel[:, 1] * 255, [0, 48, 96, 0, 48, 96], atol=1e-3)
