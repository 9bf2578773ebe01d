"""Augmentation: crops from the official scale set and 13-point grid, flips, determinism."""

import itertools

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from input_pipeline import transforms  # noqa: E402

# The official model's input statistics (docs/conventions.md), stated here rather than read from the
# code.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


def coordinate_clip(height=240, width=320, frames=2, step=1.0):
  """Frames whose red and green values are each pixel's row and column times `step`."""
  rows, columns = (
    np.arange(height, dtype=np.float32) * step,
    np.arange(width, dtype=np.float32) * step,
  )
  y, x = np.meshgrid(rows, columns, indexing="ij")
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
    offsets = [
      (0, 0),
      (4 * w_step, 0),
      (0, 4 * h_step),
      (4 * w_step, 4 * h_step),
      (2 * w_step, 2 * h_step),
      (0, 2 * h_step),
      (4 * w_step, 2 * h_step),
      (2 * w_step, 4 * h_step),
      (2 * w_step, 0),
      (w_step, h_step),
      (3 * w_step, h_step),
      (w_step, 3 * h_step),
      (3 * w_step, 3 * h_step),
    ]
    crops |= {(y, x, crop_h, crop_w) for x, y in offsets}
  return crops


def test_multi_scale_boxes_are_the_official_crops_and_many_of_them():
  allowed = allowed_crops()
  seen = {
    tuple(transforms.multi_scale_box(tf.constant([seed, 7]), 240, 320).numpy().tolist())
    for seed in range(300)
  }
  assert seen <= allowed and len(seen) > 40


def test_one_crop_for_every_frame_of_a_clip():
  clip = coordinate_clip(frames=3, step=0.5)  # pixels hold half the coordinates, within 0..255
  for seed in range(5):
    out = transforms.train_transform(
      clip, tf.constant(0), tf.constant([seed, 1]), out_size=64
    ).numpy()
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], out[2])
    # The top-left pixel's (y, x) is a crop offset on the official grid (within the resize blur).
    y, x = out[0, 0, 0, :2].astype(np.float32) * 2
    assert any(
      abs(top - y) < 3 and (abs(left - x) < 3 or abs(left + w - 1 - x) < 3)
      for top, left, h, w in allowed_crops()
    )


def test_random_resized_boxes_stay_inside_and_keep_the_area_range():
  boxes = np.array(
    [transforms.random_resized_box(tf.constant([seed, 2]), 240, 320).numpy() for seed in range(100)]
  )
  top, left, height, width = boxes.T
  assert (
    (top >= 0).all()
    and (left >= 0).all()
    and (top + height <= 240).all()
    and (left + width <= 320).all()
  )
  area = height * width / (240 * 320)
  assert area.min() >= transforms.RANDOM_RESIZED_AREA[0] - 0.01 and area.max() <= 1.0
  assert len({tuple(b) for b in boxes}) > 90
  clip = transforms.train_transform(
    coordinate_clip(), tf.constant(0), tf.constant([1, 2]), crop="random_resized"
  )
  assert clip.shape == (2, 224, 224, 3)
  with pytest.raises(ValueError, match="config.input.train_crop = 'centre'"):
    transforms.train_transform(
      coordinate_clip(), tf.constant(0), tf.constant([1, 2]), crop="centre"
    )


def test_flip_never_touches_protected_classes_and_flips_half_the_rest():
  clip = coordinate_clip(8, 8)
  flips = {
    label: sum(
      bool(
        transforms.maybe_flip(clip, tf.constant(label), tf.constant([s, 0]), (86, 87)).numpy()[
          0, 0, 0, 1
        ]
        > 0
      )
      for s in range(100)
    )
    for label in (86, 5)
  }
  assert flips[86] == 0
  assert 30 < flips[5] < 70


def test_train_transform_is_a_function_of_its_seed():
  clip = tf.constant(np.random.default_rng(0).integers(0, 255, (3, 100, 176, 3)), tf.uint8)
  a = transforms.train_transform(clip, tf.constant(3), tf.constant([1, 2]))
  b = transforms.train_transform(clip, tf.constant(3), tf.constant([1, 2]))
  c = transforms.train_transform(clip, tf.constant(3), tf.constant([1, 3]))
  assert a.shape == (3, 224, 224, 3) and a.dtype == tf.uint8
  np.testing.assert_array_equal(a.numpy(), b.numpy())
  assert not np.array_equal(a.numpy(), c.numpy())


def test_one_view_is_the_centre_crop():
  clip = coordinate_clip()
  out = transforms.eval_views(transforms.resize(clip, 240, 320), 1, 1).numpy()[0]
  expected = np.stack(
    [*np.meshgrid(np.arange(8, 232), np.arange(48, 272), indexing="ij"), np.zeros((224, 224))], -1
  )
  np.testing.assert_allclose(out[0], expected, atol=1e-3)


def test_three_crop_views_sit_at_the_start_centre_and_end_of_the_longer_side():
  clip = coordinate_clip(frames=4)  # two clips of two frames
  views = transforms.eval_views(transforms.resize(clip, 240, 320), 2, 3).numpy()
  assert views.shape == (6, 2, 224, 224, 3)
  pixel = views[:, 0, 0, 0]  # top-left (y, x) of each view
  np.testing.assert_allclose(pixel[:, 0], [8] * 6, atol=1e-3)
  np.testing.assert_allclose(pixel[:, 1], [0, 48, 96, 0, 48, 96], atol=1e-3)


def jpeg_bytes(frames):
  return tf.stack([tf.io.encode_jpeg(frame, quality=98) for frame in tf.cast(frames, tf.uint8)])


@pytest.mark.parametrize("size", [(240, 320), (100, 176), (240, 427), (300, 300)])
def test_training_clip_from_jpeg_bytes_matches_the_decoded_path(size):
  """Frames stored at the resize size are decoded only inside the crop; larger ones (resized only
  inside the crop) and smaller ones are decoded whole; each gives the clip that decoding
  everything first gives, for the same seed."""
  rng = np.random.default_rng(1)
  smooth = tf.image.resize(rng.uniform(0, 255, (3, 12, 16, 3)).astype(np.float32), size).numpy()
  encoded = jpeg_bytes(smooth)
  decoded = tf.stack([tf.io.decode_jpeg(e) for e in encoded])
  for seed in range(5):
    options = dict(
      label=tf.constant(0), seed=tf.constant([seed, 3]), resize_hw=(240, 320), out_size=112
    )
    from_jpeg = transforms.train_transform_jpeg(encoded, **options).numpy().astype(np.int32)
    reference = transforms.train_transform(decoded, **options).numpy().astype(np.int32)
    assert from_jpeg.shape == (3, 112, 112, 3)
    if size == (240, 320):  # decoded inside the crop: chroma upsampling at its border differs
      assert np.abs(from_jpeg - reference).max() <= 6 and np.abs(from_jpeg - reference).mean() < 0.3
    else:  # decoded whole, as the reference: the same pixels, but for rare roundings
      assert (
        np.abs(from_jpeg - reference).max() <= 1 and np.abs(from_jpeg - reference).mean() < 0.01
      )


@pytest.mark.parametrize("size", [(240, 320), (240, 427)])
def test_deferred_jpeg_clip_is_the_cpu_clip_once_resized_and_flipped(size):
  """defer_resize from JPEG bytes: frames stored at the resize size are decoded inside the crop's
  window (the frame's own pixels around the crop); others are resized inside the crop, zeros
  around it. Resized and flipped by input_pipeline.crop_resize, the clip is the CPU path's."""
  from input_pipeline.crop_resize import resize_crops

  rng = np.random.default_rng(6)
  smooth = tf.image.resize(rng.uniform(0, 255, (3, 12, 16, 3)).astype(np.float32), size).numpy()
  encoded = jpeg_bytes(smooth)
  flips = []
  for seed in range(6):
    options = dict(
      label=tf.constant(0), seed=tf.constant([seed, 3]), resize_hw=(240, 320), out_size=112
    )
    cpu = transforms.train_transform_jpeg(encoded, **options).numpy().astype(np.int32)
    window, box, flip = (
      t.numpy() for t in transforms.train_transform_jpeg(encoded, defer_resize=True, **options)
    )
    top, left, height, width = box
    assert (
      window.shape == (3, 240, 240, 3) and 0 <= top <= 240 - height and 0 <= left <= 240 - width
    )
    outside = np.ones((240, 240), bool)
    outside[top : top + height, left : left + width] = False
    if size == (240, 320):
      assert not outside.any() or window[:, outside].mean() > 50  # the frame's own pixels
    else:
      assert not window[:, outside].any()
    clip = resize_crops(window[None], box[None], 112, flip[None])[0].astype(np.int32)
    # Decoded inside the window rather than the crop, the crop's border pixels may differ as in
    # test_training_clip_from_jpeg_bytes_matches_the_decoded_path.
    tolerance = (6, 0.3) if size == (240, 320) else (1, 0.02)
    difference = np.abs(clip - cpu)
    assert difference.max() <= tolerance[0] and difference.mean() < tolerance[1], (
      seed,
      difference.mean(),
    )
    flips.append(bool(flip))
  assert 0 < sum(flips) < len(flips)


@pytest.mark.parametrize(
  "size, region_hw",
  [
    pytest.param((100, 176), None, marks=pytest.mark.slow),
    ((240, 427), None),
    pytest.param((521, 701), None, marks=pytest.mark.slow),
    ((240, 427), (240, 240)),
  ],
)
def test_deferred_first_resize_gives_the_cpu_clip(size, region_hw):
  """defer_resize with region_hw: each frame is decoded only over the region that its crop's first
  resize reads (downscaled by libjpeg where it is twice the size: 521 x 701 -> 261 x 351), and
  crop_resize.resize_regions then resize_crops, as the train step runs them, give the CPU path's
  clip. A region larger than region_hw (here: the wider crops of 240 x 427 frames in 240 x 240)
  takes the CPU's first resize, and a first_resize that copies its window."""
  from input_pipeline.crop_resize import resize_crops, resize_regions

  rng = np.random.default_rng(7)
  smooth = tf.image.resize(rng.uniform(0, 255, (3, 12, 16, 3)).astype(np.float32), size).numpy()
  encoded = jpeg_bytes(smooth)
  forced = region_hw is not None
  region_hw = region_hw or transforms.first_resize_region(size, (240, 320), (240, 240))
  copied = []
  for seed in range(8 if forced else 3):
    options = dict(
      label=tf.constant(0), seed=tf.constant([seed, 3]), resize_hw=(240, 320), out_size=112
    )
    cpu = transforms.train_transform_jpeg(encoded, **options).numpy().astype(np.int32)
    region, box, flip, first_resize = (
      t.numpy()
      for t in transforms.train_transform_jpeg(
        encoded, defer_resize=True, region_hw=region_hw, **options
      )
    )
    assert region.shape == (3, *region_hw, 3) and first_resize.shape == (2, 3)
    copied.append(bool((first_resize[:, 0] == 1).all() and (first_resize[:, 1] == 0).all()))
    window = resize_regions(region[None], first_resize[None], (240, 240))
    clip = resize_crops(window, box[None], 112, flip[None])[0].astype(np.int32)
    difference = np.abs(clip - cpu)
    assert difference.max() <= 2 and difference.mean() < 0.05, (
      seed,
      difference.max(),
      difference.mean(),
    )
  assert (any(copied) and not all(copied)) if forced else not any(copied)


def test_decode_resized_keeps_frames_already_at_size():
  frames = np.random.default_rng(2).integers(0, 255, (2, 24, 32, 3)).astype(np.uint8)
  encoded = jpeg_bytes(frames)
  at_size = transforms.decode_resized(encoded, (24, 32)).numpy()
  np.testing.assert_array_equal(at_size, tf.stack([tf.io.decode_jpeg(e) for e in encoded]).numpy())
  assert transforms.decode_resized(encoded, (48, 40)).numpy().shape == (2, 48, 40, 3)


def test_randaugment_treats_every_frame_alike_and_repeats_itself():
  from input_pipeline import augment

  frame = tf.image.resize(
    np.random.default_rng(3).uniform(0, 255, (1, 8, 8, 3)).astype(np.float32), (48, 64)
  )
  clip = tf.repeat(frame, 3, axis=0)
  outputs = []
  for seed in range(30):
    out = augment.randaugment(clip, tf.constant([seed, 5]), 2, 9.0).numpy()
    assert out.shape == (3, 48, 64, 3) and out.min() >= 0 and out.max() <= 255
    np.testing.assert_allclose(out[0], out[2], atol=1e-4)  # no motion added
    np.testing.assert_array_equal(
      out, augment.randaugment(clip, tf.constant([seed, 5]), 2, 9.0).numpy()
    )
    outputs.append(out[0])
  changed = [np.abs(o - clip[0].numpy()).mean() > 1 for o in outputs]
  assert sum(changed) > 20


def test_randaugment_operations_against_numpy():
  from input_pipeline import augment

  x = np.random.default_rng(4).uniform(0, 255, (2, 16, 20, 3)).astype(np.float32)
  gray = x @ np.array([0.2989, 0.587, 0.114], np.float32)
  ops = augment._operations(tf.constant(x), tf.constant(0.5), tf.constant(1.0))
  assert len(ops) == augment.NUM_OPERATIONS
  expected = {
    0: x,
    2: np.clip(
      gray[..., None] + 1.45 * (x - gray[..., None]), 0, 255
    ),  # colour, factor 1 + 0.9 * 0.5
    4: np.clip(1.45 * x, 0, 255),  # brightness
    6: np.floor(x / 4) * 4,  # posterize to 8 - round(2) = 6 bits
    7: np.where(x >= 128, 255 - x, x),  # solarize at 256 - 128
  }
  for index, reference in expected.items():
    np.testing.assert_allclose(
      ops[index]().numpy(), reference, atol=0.05, err_msg=f"operation {index}"
    )
  stretched = ops[1]().numpy()  # autocontrast: every channel spans 0..255
  np.testing.assert_allclose(stretched.min(axis=(0, 1, 2)), 0, atol=1e-3)
  np.testing.assert_allclose(stretched.max(axis=(0, 1, 2)), 255, atol=1e-3)
  shifted = augment._operations(tf.constant(x), tf.constant(4 / 9), tf.constant(1.0))[12]().numpy()
  np.testing.assert_allclose(
    shifted[:, :, :-4], x[:, :, 4:], atol=1e-3
  )  # translate x by 0.45 * 4/9 * 20 = 4 px


def official_training_clips(frames, resize_hw, out_size):
  """Every clip the official PIL pipeline can make of uint8 frames: each frame resized to
  resize_hw (GroupScale), one of the allowed crops resized to out_size (GroupMultiScaleCrop),
  flipped or not (GroupRandomHorizontalFlip); PIL's bilinear resizes, uint8 throughout."""
  from PIL import Image

  height, width = resize_hw
  images = [Image.fromarray(frame).resize((width, height), Image.BILINEAR) for frame in frames]
  for top, left, crop_h, crop_w in sorted(allowed_crops(height, width)):
    clip = np.stack(
      [
        np.asarray(
          image.crop((left, top, left + crop_w, top + crop_h)).resize(
            (out_size, out_size), Image.BILINEAR
          )
        )
        for image in images
      ]
    )
    yield clip
    yield clip[:, :, ::-1]


@pytest.mark.parametrize("frame_size", [(75, 100), (60, 107), (60, 80), (45, 60)])
def test_training_clips_are_the_official_pil_clips(frame_size):
  """Pixels against PIL's, as the official code makes them: each clip is, within the rounding of
  PIL's fixed-point resizes, one of the clips the official pipeline can make of the same frames
  (frames larger than resize_hw, as tall and wider (SSv2), equal to it, and smaller)."""
  rng = np.random.default_rng(4)
  frames = (
    tf.image.resize(rng.uniform(0, 255, (2, 6, 8, 3)), frame_size).numpy().round().astype(np.uint8)
  )
  candidates = list(official_training_clips(frames, (60, 80), 48))
  for seed in range(6):
    clip = (
      transforms.train_transform(
        tf.constant(frames), tf.constant(0), tf.constant([seed, 9]), resize_hw=(60, 80), out_size=48
      )
      .numpy()
      .astype(np.int32)
    )
    assert clip.dtype == np.int32 and clip.shape == (2, 48, 48, 3)
    nearest = min((np.abs(clip - candidate) for candidate in candidates), key=np.mean)
    # Each resize rounds to pixels (as PIL's), so two roundings can part by 2 levels; any other
    # crop or flip is ~10 levels away on average.
    assert nearest.max() <= 2 and nearest.mean() < 0.4 and (nearest > 1).mean() < 0.01, (
      seed,
      nearest.mean(),
    )


@pytest.mark.parametrize("frame_size", [(75, 100), (60, 107)])
def test_crops_resized_on_the_accelerator_are_the_official_pil_clips(frame_size):
  """defer_resize: the crop in its window, its box and the flip, resized by
  input_pipeline.crop_resize as the train step does, give one of the official pipeline's clips as
  closely as the CPU path."""
  from input_pipeline.crop_resize import resize_crops

  rng = np.random.default_rng(4)
  frames = (
    tf.image.resize(rng.uniform(0, 255, (2, 6, 8, 3)), frame_size).numpy().round().astype(np.uint8)
  )
  candidates = list(official_training_clips(frames, (60, 80), 48))
  for seed in range(6):
    window, box, flip = transforms.train_transform(
      tf.constant(frames),
      tf.constant(0),
      tf.constant([seed, 9]),
      resize_hw=(60, 80),
      out_size=48,
      defer_resize=True,
    )
    assert (
      window.shape == (2, 60, 60, 3) and window.dtype == tf.uint8
    )  # multi-scale boxes fit 60 x 60
    top, left, height, width = box.numpy()
    assert 0 <= top <= 60 - height and 0 <= left <= 60 - width
    outside = np.ones((60, 60), bool)
    outside[top : top + height, left : left + width] = False
    assert not window.numpy()[:, outside].any()  # zeros around the crop
    clip = resize_crops(window.numpy()[None], box.numpy()[None], 48, flip.numpy()[None])[0].astype(
      np.int32
    )
    nearest = min((np.abs(clip - candidate) for candidate in candidates), key=np.mean)
    assert nearest.max() <= 2 and nearest.mean() < 0.4 and (nearest > 1).mean() < 0.01, (
      seed,
      nearest.mean(),
    )


def test_jpeg_frames_twice_the_size_are_decoded_downscaled_and_resized_to_the_same_frames():
  """A frame at least twice the resize size is downscaled while it is decoded (libjpeg's DCT
  scaling), and still resizes to what PIL makes of the full frame, within a few levels."""
  from PIL import Image

  rng = np.random.default_rng(5)
  frames = (
    tf.image.resize(rng.uniform(0, 255, (2, 6, 8, 3)), (200, 260)).numpy().round().astype(np.uint8)
  )
  encoded = jpeg_bytes(frames)
  assert tuple(transforms.decode_at_least(encoded[0], 48, 64).shape) == (
    50,
    65,
    3,
  )  # 1/4: 200x260 -> 50x65
  assert tuple(transforms.decode_at_least(encoded[0], 60, 64).shape) == (100, 130, 3)  # 1/2
  assert tuple(transforms.decode_at_least(encoded[0], 101, 64).shape) == (200, 260, 3)  # full size
  resized = transforms.decode_resized(encoded, (48, 64)).numpy()
  decoded = [Image.fromarray(tf.io.decode_jpeg(e).numpy()) for e in encoded]
  expected = np.stack(
    [np.asarray(image.resize((64, 48), Image.BILINEAR), np.float32) for image in decoded]
  )
  assert np.abs(resized - expected).max() < 8
  assert (
    np.abs(resized - expected).mean() < 1.5
  )  # libjpeg's scaling filter is not PIL's: ~1.1 levels
