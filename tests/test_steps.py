"""The train step with gradient accumulation, against a reference written with plain NNX calls."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import default
from stss_jax.models import build_model
from stss_jax.train import sharding, steps
from stss_jax.train.state import create_train_state

LEARNING_RATE = 0.1


def tiny_config():
  config = default.get_config("tiny")
  config.model.dropout = 0.0  # the reference draws no dropout masks
  # Accumulation does not depend on the layers; without the SELFY block the programs compile in
  # a third of the time. BatchNorm, whose statistics accumulation changes, is in every block.
  config.model.selfy_stages = ()
  return config


def a_batch(size, config, seed=0):
  rng = np.random.default_rng(seed)
  clips = rng.normal(
    size=(size, config.input.num_frames, config.input.image_size, config.input.image_size, 3)
  )
  return {
    "clips": clips.astype(np.float32),
    "labels": rng.integers(0, config.dataset.num_classes, size).astype(np.int32),
  }


def reference_update(config, batch, micro_batches):
  """Parameters and BN statistics after one SGD update from the mean gradient of the micro-batches
  (rows k, k + K, ...), BN running statistics updated once per micro-batch in order."""
  model = build_model(config)
  model.train()

  def loss(model, clips, labels):
    logits = model(clips)
    return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels
    ).mean()

  params = nnx.state(model, nnx.Param)
  gradient_sum, losses = None, []
  for k in range(micro_batches):
    clips, labels = batch["clips"][k::micro_batches], batch["labels"][k::micro_batches]
    # Train-mode outputs use batch statistics only, so every micro-batch's gradient is taken at
    # the same parameters whatever the running statistics hold.
    value, gradient = nnx.jit(nnx.value_and_grad(loss))(model, clips, labels)
    losses.append(float(value))
    gradient_sum = (
      gradient if gradient_sum is None else jax.tree.map(jnp.add, gradient_sum, gradient)
    )
  expected = jax.tree.map(lambda p, g: p - LEARNING_RATE * g / micro_batches, params, gradient_sum)
  return expected, nnx.state(model, nnx.BatchStat), float(np.mean(losses))


def project_update(config, batch, micro_batches, mesh=None, window_hw=None):
  model = build_model(config)
  tx = optax.sgd(LEARNING_RATE)
  state, graphs = create_train_state(model, tx)
  step = steps.make_train_step(
    graphs,
    tx,
    lambda _: LEARNING_RATE,
    0.0,
    grad_accum_steps=micro_batches,
    image_size=config.input.image_size,
    window_hw=window_hw,
  )
  if mesh is not None:
    sharding.check_batch_size(len(batch["labels"]), mesh, micro_batches)
    state = jax.device_put(state, sharding.replicated(mesh))
    batch = sharding.global_batch(batch, mesh)
  new_state, metrics = jax.jit(step)(state, batch, jax.random.key(0))
  return new_state, metrics


def assert_trees_close(actual, expected, rtol, atol):
  for (path, a), b in zip(
    jax.tree.leaves_with_path(actual), jax.tree.leaves(expected), strict=True
  ):
    np.testing.assert_allclose(
      np.asarray(a), np.asarray(b), rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path)
    )


@pytest.mark.parametrize(
  "micro_batches,devices",
  [pytest.param(1, 1, marks=pytest.mark.slow), pytest.param(4, 1, marks=pytest.mark.slow), (2, 8)],
)
def test_accumulated_update_is_the_mean_gradient_of_the_micro_batches(micro_batches, devices):
  config = tiny_config()
  batch = a_batch(16, config)
  mesh = sharding.make_mesh(jax.devices()[:devices]) if devices > 1 else None
  state, metrics = project_update(config, batch, micro_batches, mesh)
  expected_params, expected_stats, expected_loss = reference_update(config, batch, micro_batches)
  assert_trees_close(state.params, expected_params, rtol=2e-4, atol=2e-6)
  assert_trees_close(state.batch_stats, expected_stats, rtol=2e-4, atol=2e-6)
  np.testing.assert_allclose(float(metrics["loss"]), expected_loss, rtol=1e-5)
  assert int(state.step) == 1


def test_micro_batches_are_strided_so_each_device_holds_a_share_of_each():
  batch = {"x": np.arange(8)}
  np.testing.assert_array_equal(steps.micro_batches(batch, 2)["x"], [[0, 2, 4, 6], [1, 3, 5, 7]])


def test_batch_size_must_split_over_devices_and_micro_batches():
  mesh = sharding.make_mesh(jax.devices()[:4])
  assert sharding.check_batch_size(16, mesh, 4) == 16
  with pytest.raises(
    ValueError,
    match=r"batch_size = 8 .* 4 data-parallel devices x config.grad_accum_steps = "
    r"4; use a multiple of 16",
  ):
    sharding.check_batch_size(8, mesh, 4)


def test_uint8_pixel_clips_are_normalised_in_the_step():
  """The video sources' uint8 training clips: the step's update equals the reference update on
  the clips normalised here, with ImageNet statistics as docs/conventions.md states them."""
  config = tiny_config()
  rng = np.random.default_rng(1)
  pixels = rng.integers(
    0, 256, (4, config.input.num_frames, config.input.image_size, config.input.image_size, 3)
  )
  labels = rng.integers(0, config.dataset.num_classes, 4).astype(np.int32)
  normalised = (pixels / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
  state, metrics = project_update(config, {"clips": pixels.astype(np.uint8), "labels": labels}, 1)
  expected_params, _, expected_loss = reference_update(
    config, {"clips": normalised.astype(np.float32), "labels": labels}, 1
  )
  assert_trees_close(state.params, expected_params, rtol=2e-4, atol=2e-6)
  np.testing.assert_allclose(float(metrics["loss"]), expected_loss, rtol=1e-5)


@pytest.mark.slow  # the next test runs the same path after a first resize
def test_padded_crops_are_resized_in_the_step():
  """resize_on_accelerator batches: crop windows with their 'crop_boxes' and 'flips', split into
  two micro-batches. The update equals the step's update on the same crops resized and flipped
  beforehand (crop_resize, which tests/test_crop_resize.py holds to PIL), as uint8 clips (whose
  update the test above holds to the reference). Each crop side is kept or doubled and the pixels
  are multiples of 16 (weights of 1/4 and 3/4 per pass), so that every resized value is a whole
  level: no rounding can part the two."""
  from input_pipeline.crop_resize import resize_crops

  config = tiny_config()
  size, frames = config.input.image_size, config.input.num_frames
  rng = np.random.default_rng(2)
  half = size // 2
  boxes = np.array(
    [[0, half, size, half], [0, 0, size, size], [half, 0, half, size], [half // 2, 3, half, half]],
    np.int32,
  )
  flips = np.array([True, False, False, True])
  windows = (16 * rng.integers(0, 16, (4, frames, size, size, 3))).astype(np.uint8)
  labels = rng.integers(0, config.dataset.num_classes, 4).astype(np.int32)
  state, metrics = project_update(
    config, {"clips": windows, "crop_boxes": boxes, "flips": flips, "labels": labels}, 2
  )
  resized = resize_crops(windows, boxes, size, flips)
  expected_state, expected_metrics = project_update(config, {"clips": resized, "labels": labels}, 2)
  assert_trees_close(state.params, expected_state.params, rtol=2e-4, atol=2e-6)
  np.testing.assert_allclose(float(metrics["loss"]), float(expected_metrics["loss"]), rtol=1e-5)


def test_frame_regions_are_resized_to_windows_in_the_step():
  """Raw frames' regions with their 'first_resize' (here a halving: scale 2 on both axes) are
  resized to the crop windows first, then cropped, resized and flipped: the update equals the
  step's update on clips made by crop_resize beforehand. Pixels are multiples of 16 and the
  halving's weights are eighths, so every value on the way is a whole level."""
  from input_pipeline.crop_resize import resize_crops, resize_regions

  config = tiny_config()
  size, frames = config.input.image_size, config.input.num_frames
  rng = np.random.default_rng(3)
  regions = (16 * rng.integers(0, 16, (4, frames, 2 * size + 4, 2 * size + 4, 3))).astype(np.uint8)
  first_resize = np.tile(np.array([[2.0, 0.0, 2 * size]], np.float32), (4, 2, 1))
  boxes = np.tile(np.array([[0, 0, size, size]], np.int32), (4, 1))
  flips = np.array([False, True, True, False])
  labels = rng.integers(0, config.dataset.num_classes, 4).astype(np.int32)
  batch = {
    "clips": regions,
    "first_resize": first_resize,
    "crop_boxes": boxes,
    "flips": flips,
    "labels": labels,
  }
  state, metrics = project_update(config, batch, 2, window_hw=(size, size))
  clips = resize_crops(resize_regions(regions, first_resize, (size, size)), boxes, size, flips)
  expected_state, expected_metrics = project_update(config, {"clips": clips, "labels": labels}, 2)
  assert_trees_close(state.params, expected_state.params, rtol=2e-4, atol=2e-6)
  np.testing.assert_allclose(float(metrics["loss"]), float(expected_metrics["loss"]), rtol=1e-5)
