"""The SELFY block against outputs of the authors' PyTorch code (tests/fixtures)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stss_jax.convert import load_weights
from stss_jax.layers import SELFYBlock
from tests.conftest import FIXTURES


@pytest.fixture(scope="module")
def official():
  data = np.load(FIXTURES / "selfy_block_official.npz")
  return {k: data[k] for k in data.files}


@pytest.fixture(
  scope="module",
  params=[("shift", "conv"), ("matmul", "dense"), ("gather", "dense")],
  ids=["shift-conv", "matmul-dense", "gather-dense"],
)
def block(official, request):
  stss_implementation, extraction_implementation = request.param
  block = SELFYBlock(
    64,
    32,
    (5, 9, 9),
    (4, 16, 64, 64),
    (64, 64, 64, 64),
    rngs=nnx.Rngs(0),
    stss_implementation=stss_implementation,
    extraction_implementation=extraction_implementation,
  )
  params = {k.removeprefix("param/"): v for k, v in official.items() if k.startswith("param/")}
  report = load_weights(block, params)
  assert not report.left_at_init and len(report.used) == len(params)
  block.eval()
  return block


def to_clips(nchw, frames=8):
  """(N*T, C, H, W) clip-major -> (N, T, H, W, C)."""
  nt, c, h, w = nchw.shape
  return nchw.reshape(nt // frames, frames, c, h, w).transpose(0, 1, 3, 4, 2)


def test_stss_of_transformation_matches_official(official, block):
  stss = block.stss_transformation(jnp.asarray(to_clips(official["input"])))
  expected = official["stss"][:, :, :, :, 0]  # drop the official singleton channel axis
  np.testing.assert_allclose(np.asarray(stss), expected, atol=1e-5)


def test_block_output_matches_official(official, block):
  output = jax.jit(lambda m, x: m(x))(block, jnp.asarray(to_clips(official["input"])))
  expected = to_clips(official["output"])
  assert np.max(np.abs(np.asarray(output) - expected)) < 1e-4


def randomize_batch_norms(module, seed):
  """Random scale, bias and running statistics in every BN, so that nothing cancels."""
  rng = np.random.default_rng(seed)
  for _, bn in module.iter_modules():
    if isinstance(bn, nnx.BatchNorm):
      size = bn.scale[...].shape
      bn.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, size), jnp.float32)
      bn.bias[...] = jnp.asarray(rng.normal(0, 0.3, size), jnp.float32)
      bn.mean[...] = jnp.asarray(rng.normal(0, 0.3, size), jnp.float32)
      bn.var[...] = jnp.asarray(rng.uniform(0.5, 2.0, size), jnp.float32)


def numpy_conv_bn_relu(x, unit):
  """A 1x1 ConvBN unit in eval mode: x (..., Cin) -> relu(BN(x @ W))."""
  kernel = np.asarray(unit.conv.kernel[...], np.float64).reshape(x.shape[-1], -1)
  bn = unit.bn
  y = (x @ kernel - np.asarray(bn.mean[...])) / np.sqrt(np.asarray(bn.var[...]) + 1e-5)
  return np.maximum(y * np.asarray(bn.scale[...]) + np.asarray(bn.bias[...]), 0)


def numpy_soft_argmax(planes, temperature):
  """(..., U, V) similarities -> (..., 2) expected (row, column) offset of the match."""
  *batch, U, V = planes.shape
  logits = planes.reshape(*batch, U * V).astype(np.float64) / temperature
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  rows, columns = np.divmod(np.arange(U * V), V)
  return np.stack([weights @ (rows - U // 2), weights @ (columns - V // 2)], -1)


@pytest.mark.parametrize("window", [(3, 5, 5), (1, 3, 7)])
def test_soft_argmax_extractor_against_numpy(window):
  block = SELFYBlock(
    16,
    8,
    window,
    (4, 8, 16, 16),
    (16, 16, 16, 16),
    extractor="soft_argmax",
    temperature=0.05,
    rngs=nnx.Rngs(0),
  )
  extraction = block.stss_extraction
  randomize_batch_norms(extraction, 1)
  extraction.eval()
  planes = np.random.default_rng(2).uniform(-1, 1, (2, 3, 4, 4) + window[1:]).astype(np.float32)
  got = np.asarray(nnx.jit(lambda m, x: m(x))(extraction, jnp.asarray(planes)))
  displacement = numpy_soft_argmax(planes, 0.05)
  np.testing.assert_allclose(got, numpy_conv_bn_relu(displacement, extraction.embed), atol=1e-4)
  # A sharp peak: the displacement is the peak's own offset.
  peak = np.zeros(window[1:], np.float32)
  peak[0, -1] = 1.0
  np.testing.assert_allclose(
    numpy_soft_argmax(peak, 0.01), [-(window[1] // 2), window[2] // 2], atol=1e-6
  )


@pytest.mark.parametrize("window", [(3, 5, 5), (1, 3, 7)])
def test_mlp_extractor_against_numpy(window):
  block = SELFYBlock(
    16, 8, window, (4, 8, 16, 16), (16, 16, 16, 16), extractor="mlp", rngs=nnx.Rngs(0)
  )
  extraction = block.stss_extraction
  randomize_batch_norms(extraction, 3)
  extraction.eval()
  planes = np.random.default_rng(4).uniform(-1, 1, (2, 3, 4, 4) + window[1:]).astype(np.float32)
  got = np.asarray(nnx.jit(lambda m, x: m(x))(extraction, jnp.asarray(planes)))
  flat = planes.reshape(*planes.shape[:-2], -1).astype(np.float64)
  expected = numpy_conv_bn_relu(numpy_conv_bn_relu(flat, extraction.fc0), extraction.fc1)
  np.testing.assert_allclose(got, expected, atol=1e-4)


def numpy_gradient(function, x, cotangent, points, eps=1e-6):
  """d(sum(function(x) * cotangent))/dx at a few flat positions, by central differences in
  float64."""
  gradient = []
  for index in points:
    step = np.zeros(x.size)
    step[index] = eps
    step = step.reshape(x.shape)
    gradient.append(((function(x + step) - function(x - step)) * cotangent).sum() / (2 * eps))
  return np.array(gradient)


@pytest.mark.parametrize("extractor", ["soft_argmax", "mlp"])
def test_extractor_gradients_against_numpy(extractor):
  """The gradient of the extractor's output with respect to the similarity planes, against
  central differences of the numpy reference above."""
  window = (3, 5, 5)
  block = SELFYBlock(
    16,
    8,
    window,
    (4, 8, 16, 16),
    (16, 16, 16, 16),
    extractor=extractor,
    temperature=0.2,
    rngs=nnx.Rngs(0),
  )
  extraction = block.stss_extraction
  randomize_batch_norms(extraction, 5)
  extraction.eval()
  planes = np.random.default_rng(6).uniform(-1, 1, (2, 3, 2, 2) + window[1:])
  if extractor == "soft_argmax":

    def reference(x):
      return numpy_conv_bn_relu(numpy_soft_argmax(x, 0.2), extraction.embed)
  else:

    def reference(x):
      flat = x.reshape(*x.shape[:-2], -1)
      return numpy_conv_bn_relu(numpy_conv_bn_relu(flat, extraction.fc0), extraction.fc1)

  cotangent = np.random.default_rng(7).normal(size=reference(planes).shape)
  with jax.enable_x64(True):
    graph, state = nnx.split(extraction)
    state = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), state)

    def loss(x):
      return jnp.sum(nnx.merge(graph, state)(x) * cotangent)

    got = np.asarray(jax.grad(loss)(jnp.asarray(planes, jnp.float64))).reshape(-1)
  points = np.random.default_rng(8).choice(planes.size, 24, replace=False)
  np.testing.assert_allclose(
    got[points], numpy_gradient(reference, planes, cotangent, points), rtol=1e-4, atol=1e-7
  )


@pytest.mark.parametrize("offsets", [(1,), (-1, 1), (1, 2, 3)])
def test_block_with_temporal_offsets(offsets):
  """The STSS the block integrates has one map per offset: against the op's naive loop, and the
  fuse conv takes one group of channels per offset."""
  from tests.test_ops import naive_stss_offsets

  block = SELFYBlock(
    8, 8, (5, 3, 3), (4, 8, 16, 16), (16, 16, 16, 16), temporal_offsets=offsets, rngs=nnx.Rngs(0)
  )
  block.eval()
  clips = jax.random.normal(jax.random.key(3), (2, 4, 8, 8, 8))
  stss = np.asarray(block.stss_transformation(clips))
  features = np.asarray(block.stss_transformation.downsample(clips))
  np.testing.assert_allclose(stss, naive_stss_offsets(features, offsets, 3, 3), atol=2e-5)
  assert block.stss_integration.conv3_fuse.conv.kernel.shape[2] == len(offsets) * 16
  assert block(clips).shape == clips.shape


@pytest.mark.parametrize("extractor", ["conv", "soft_argmax", "mlp"])
def test_block_learns_through_every_extractor(extractor):
  """Trained by Adam towards a fixed target, the block's loss falls and the extractor's own
  weights move: the gradient reaches them through the integration."""
  import optax

  block = SELFYBlock(
    8, 8, (3, 3, 3), (4, 8, 16, 16), (16, 16, 16, 16), extractor=extractor, rngs=nnx.Rngs(0)
  )
  clips = jax.random.normal(jax.random.key(1), (4, 4, 8, 8, 8))
  target = jax.nn.relu(jax.random.normal(jax.random.key(2), clips.shape))
  graph, params, rest = nnx.split(block, nnx.Param, ...)
  tx = optax.adam(1e-2)

  @jax.jit
  def step(params, rest, opt_state):
    def loss(params):
      model = nnx.merge(graph, params, rest, copy=True)
      return jnp.mean((model(clips) - target) ** 2), nnx.state(model, nnx.Not(nnx.Param))

    (value, rest), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), rest, opt_state, value

  initial = jax.tree.map(np.asarray, params["stss_extraction"])
  opt_state = tx.init(params)
  losses = []
  for _ in range(60):
    params, rest, opt_state, value = step(params, rest, opt_state)
    losses.append(float(value))
  assert losses[-1] < 0.7 * losses[0], losses[::10]
  moved = jax.tree.map(
    lambda a, b: float(np.abs(np.asarray(a) - b).max()), params["stss_extraction"], initial
  )
  assert min(jax.tree.leaves(moved)) > 1e-3, moved


@pytest.mark.parametrize("implementation", ["conv", "dense"])
@pytest.mark.parametrize("window", [(5, 9, 9), (5, 3, 3), (1, 1, 1), (3, 7, 5)])
def test_conv_extractor_reduces_any_odd_window(window, implementation):
  block = SELFYBlock(
    16,
    8,
    window,
    (4, 8, 16, 16),
    (16, 16, 16, 16),
    rngs=nnx.Rngs(0),
    extraction_implementation=implementation,
  )
  stss = jax.random.uniform(jax.random.key(0), (1, 2, 3, 3) + window)
  assert nnx.jit(lambda m, x: m(x))(block.stss_extraction, stss).shape == (
    1,
    2,
    3,
    3,
    window[0],
    16,
  )


def test_block_rejects_bad_settings():
  with pytest.raises(ValueError, match="extractor"):
    SELFYBlock(16, 8, extractor="flow", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="window"):
    SELFYBlock(16, 8, window=(4, 9, 9), rngs=nnx.Rngs(0))


def test_dense_extraction_gradients_match_convolutions():
  clips = jax.random.normal(jax.random.key(2), (2, 4, 8, 8, 16))
  blocks = [
    SELFYBlock(
      16,
      8,
      (3, 9, 9),
      (4, 8, 16, 16),
      (16, 16, 16, 16),
      rngs=nnx.Rngs(0),
      extraction_implementation=impl,
    )
    for impl in ("conv", "dense")
  ]
  for block in blocks:  # a non-zero last BN scale, so that gradients reach every layer
    block.stss_integration.upsample_bn.scale[...] = jnp.full((16,), 0.5)

  def loss(block):
    return jnp.mean(jnp.sin(block(clips)))

  conv_grads, dense_grads = (jax.tree.leaves(nnx.jit(nnx.grad(loss))(b)) for b in blocks)
  for a, b in zip(conv_grads, dense_grads, strict=True):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-4, atol=1e-6)
  # The dense form pads its activations to aligned rows: the BN statistics must not see that.
  conv_stats, dense_stats = (
    jax.tree.leaves(nnx.state(b.stss_extraction, nnx.BatchStat)) for b in blocks
  )
  for a, b in zip(conv_stats, dense_stats, strict=True):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("out_size", [(8, 8), (7, 9)])
def test_interleaved_batch_norm_is_batch_norm_of_the_zero_interleaved_map(out_size):
  """The upsample BN, computed from the compact map, against numpy BN of the map with zeros
  written between the values: outputs, running statistics, and eval mode."""
  from stss_jax.layers.conv_bn import batch_norm
  from stss_jax.layers.selfy import interleaved_batch_norm

  height, width = out_size
  h, w = (height + 1) // 2, (width + 1) // 2
  x = np.random.default_rng(0).normal(1.0, 2.0, (2, 3, h, w, 5)).astype(np.float32)
  scale, bias = np.arange(1.0, 6.0, dtype=np.float32), np.arange(5, dtype=np.float32) / 10
  full = np.zeros((2, 3, height, width, 5), np.float32)
  full[:, :, ::2, ::2] = x
  mean, var = full.mean((0, 1, 2, 3)), full.var((0, 1, 2, 3))
  bn = batch_norm(5, dtype=jnp.float32, rngs=nnx.Rngs(0))
  bn.scale[...], bn.bias[...] = jnp.asarray(scale), jnp.asarray(bias)
  out = interleaved_batch_norm(bn, jnp.asarray(x), out_size)
  np.testing.assert_allclose(out, (full - mean) / np.sqrt(var + 1e-5) * scale + bias, atol=1e-4)
  np.testing.assert_allclose(bn.mean[...], 0.1 * mean, atol=1e-6)  # momentum 0.9 from 0
  np.testing.assert_allclose(bn.var[...], 0.9 + 0.1 * var, atol=1e-5)  # from 1
  bn.eval()
  running_mean, running_var = np.asarray(bn.mean[...]), np.asarray(bn.var[...])
  out = interleaved_batch_norm(bn, jnp.asarray(x), out_size)
  np.testing.assert_allclose(
    out, (full - running_mean) / np.sqrt(running_var + 1e-5) * scale + bias, atol=1e-4
  )
