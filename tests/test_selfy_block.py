"""The SELFY block against outputs of the authors' PyTorch code (../shared/fixtures)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stss_jax.convert import load_weights
from stss_jax.layers import SELFYBlock
from tests.conftest import FIXTURES, require_shared


@pytest.fixture(scope="module")
def official():
  data = np.load(require_shared(FIXTURES / "selfy_block_official.npz"))
  return {k: data[k] for k in data.files}


@pytest.fixture(scope="module", params=[("shift", "conv"), ("matmul", "dense"), ("gather", "dense")],
                ids=["shift-conv", "matmul-dense", "gather-dense"])
def block(official, request):
  stss_implementation, extraction_implementation = request.param
  block = SELFYBlock(64, 32, (5, 9, 9), (4, 16, 64, 64), (64, 64, 64, 64), rngs=nnx.Rngs(0),
                     stss_implementation=stss_implementation, extraction_implementation=extraction_implementation)
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


@pytest.mark.parametrize("extractor", ["soft_argmax", "mlp"])
@pytest.mark.parametrize("window", [(3, 5, 5), (1, 3, 3)])
def test_other_extractors_and_windows_run_and_learn(extractor, window):
  block = SELFYBlock(16, 8, window, (4, 8, 16, 16), (16, 16, 16, 16), extractor=extractor, rngs=nnx.Rngs(0))
  clips = jax.random.normal(jax.random.key(1), (2, 4, 8, 8, 16))

  def loss(block):
    return jnp.mean(block(clips) ** 2)

  grads = nnx.jit(nnx.grad(loss))(block)
  output = nnx.jit(lambda m, x: m(x))(block, clips)
  assert output.shape == clips.shape
  # The zero-initialised last BN scale blocks every gradient but its own and the bias's at init;
  # the integration's last BN must still receive one.
  assert float(jnp.abs(grads.stss_integration.upsample_bn.scale[...]).sum()) > 0


@pytest.mark.parametrize("implementation", ["conv", "dense"])
@pytest.mark.parametrize("window", [(5, 9, 9), (5, 3, 3), (1, 1, 1), (3, 7, 5)])
def test_conv_extractor_reduces_any_odd_window(window, implementation):
  block = SELFYBlock(16, 8, window, (4, 8, 16, 16), (16, 16, 16, 16), rngs=nnx.Rngs(0),
                     extraction_implementation=implementation)
  stss = jax.random.uniform(jax.random.key(0), (1, 2, 3, 3) + window)
  assert nnx.jit(lambda m, x: m(x))(block.stss_extraction, stss).shape == (1, 2, 3, 3, window[0], 16)


def test_block_rejects_bad_settings():
  with pytest.raises(ValueError, match="extractor"):
    SELFYBlock(16, 8, extractor="flow", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="window"):
    SELFYBlock(16, 8, window=(4, 9, 9), rngs=nnx.Rngs(0))


def test_dense_extraction_gradients_match_convolutions():
  clips = jax.random.normal(jax.random.key(2), (2, 4, 8, 8, 16))
  blocks = [SELFYBlock(16, 8, (3, 9, 9), (4, 8, 16, 16), (16, 16, 16, 16), rngs=nnx.Rngs(0),
                       extraction_implementation=impl) for impl in ("conv", "dense")]
  for block in blocks:  # a non-zero last BN scale, so that gradients reach every layer
    block.stss_integration.upsample_bn.scale[...] = jnp.full((16,), 0.5)

  def loss(block):
    return jnp.mean(jnp.sin(block(clips)))

  conv_grads, dense_grads = (jax.tree.leaves(nnx.jit(nnx.grad(loss))(b)) for b in blocks)
  for a, b in zip(conv_grads, dense_grads, strict=True):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-4, atol=1e-6)
  # The dense form pads its activations to aligned rows: the BN statistics must not see that.
  conv_stats, dense_stats = (jax.tree.leaves(nnx.state(b.stss_extraction, nnx.BatchStat)) for b in blocks)
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
  np.testing.assert_allclose(out, (full - running_mean) / np.sqrt(running_var + 1e-5) * scale + bias, atol=1e-4)
