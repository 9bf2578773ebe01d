"""The one-pass BatchNorm (+ ReLU) and its hand-written gradient, against numpy BN in float64 and
against autodiff of the textbook two-pass formula; the inference-mode convolution with BN folded
into it, against a numpy loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stss_jax.layers.conv_bn import ConvBN, batch_norm, batch_norm_relu

EPS = 1e-5


def numpy_batch_norm(x, scale, bias, relu):
  x = x.astype(np.float64).reshape(-1, x.shape[-1])
  mean, var = x.mean(0), x.var(0)
  y = (x - mean) / np.sqrt(var + EPS) * scale + bias
  return np.maximum(y, 0) if relu else y, mean, var


def textbook_batch_norm(x, scale, bias, relu):
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axes)
  var = jnp.mean(jnp.square(x - mean), axes)
  y = (x - mean) / jnp.sqrt(var + EPS) * scale + bias
  return jax.nn.relu(y) if relu else y


def make(features, seed):
  rng = np.random.default_rng(seed)
  bn = batch_norm(features, dtype=jnp.float32, rngs=nnx.Rngs(0))
  bn.scale[...] = jnp.asarray(rng.uniform(0.5, 2.0, features), jnp.float32)
  bn.bias[...] = jnp.asarray(rng.normal(0.0, 0.5, features), jnp.float32)
  # Large offsets per channel: a one-pass variance must still be accurate.
  x = rng.normal(
    rng.uniform(-3, 3, features), rng.uniform(0.5, 3, features), (4, 3, 5, 7, features)
  )
  return bn, x.astype(np.float32)


@pytest.mark.parametrize("relu", [True, False])
def test_training_forward_and_running_statistics_match_numpy(relu):
  bn, x = make(6, 0)
  scale, bias = np.asarray(bn.scale[...]), np.asarray(bn.bias[...])
  y = batch_norm_relu(bn, jnp.asarray(x), relu)
  expected, mean, var = numpy_batch_norm(x, scale, bias, relu)
  np.testing.assert_allclose(np.asarray(y).reshape(expected.shape), expected, atol=2e-5, rtol=1e-5)
  np.testing.assert_allclose(bn.mean[...], 0.1 * mean, rtol=1e-5, atol=1e-6)  # momentum 0.9 from 0
  np.testing.assert_allclose(bn.var[...], 0.9 + 0.1 * var, rtol=1e-5)  # from 1
  bn.eval()
  y = batch_norm_relu(bn, jnp.asarray(x), relu)
  running = (x - 0.1 * mean) / np.sqrt(0.9 + 0.1 * var + EPS) * scale + bias
  np.testing.assert_allclose(np.asarray(y), np.maximum(running, 0) if relu else running, atol=2e-5)


@pytest.mark.parametrize("relu", [True, False])
def test_gradients_match_autodiff_of_the_textbook_formula(relu):
  bn, x = make(5, 1)
  weights = jnp.asarray(np.random.default_rng(2).normal(size=x.shape), jnp.float32)

  def textbook_loss(x, scale, bias):
    return jnp.sum(jnp.sin(textbook_batch_norm(x, scale, bias, relu)) * weights)

  def our_loss(bn, x):
    return jnp.sum(jnp.sin(batch_norm_relu(bn, x, relu)) * weights)

  expected = jax.grad(textbook_loss, argnums=(0, 1, 2))(jnp.asarray(x), bn.scale[...], bn.bias[...])
  bn_grads, x_grad = nnx.grad(our_loss, argnums=(0, 1))(bn, jnp.asarray(x))
  got = x_grad, bn_grads["scale"][...], bn_grads["bias"][...]
  for g, e, name in zip(got, expected, ("x", "scale", "bias")):
    np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=2e-4, atol=2e-5, err_msg=name)


def test_bfloat16_activations_keep_their_dtype_and_stay_close():
  bn, x = make(4, 3)
  bn16 = batch_norm(4, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  bn16.scale[...], bn16.bias[...] = bn.scale[...], bn.bias[...]
  x16 = jnp.asarray(x, jnp.bfloat16)
  y, grad = nnx.value_and_grad(
    lambda bn, v: jnp.sum(batch_norm_relu(bn, v).astype(jnp.float32) ** 2), argnums=1
  )(bn16, x16)
  assert grad.dtype == jnp.bfloat16
  x32 = np.asarray(x16.astype(jnp.float32))
  expected = jax.grad(
    lambda v: jnp.sum(textbook_batch_norm(v, bn.scale[...], bn.bias[...], True) ** 2)
  )(x32)
  np.testing.assert_allclose(
    float(y),
    np.sum(
      numpy_batch_norm(x32, np.asarray(bn.scale[...]), np.asarray(bn.bias[...]), True)[0] ** 2
    ),
    rtol=1e-2,
  )
  err = np.linalg.norm(np.asarray(grad, np.float32) - expected) / np.linalg.norm(expected)
  assert err < 1e-2, err


def test_appended_zero_cells_change_nothing():
  """Alignment padding: zero cells after the real ones (left out by real_cells) give the same
  outputs, running statistics and gradients on the real cells as the unpadded activations."""
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(1.0, 2.0, (6, 9, 4)), jnp.float32)
  padded = jnp.pad(x, ((0, 0), (0, 3), (0, 0)))
  weights = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  results = []
  for values, real_cells in ((x, None), (padded, 9)):
    bn = batch_norm(4, dtype=jnp.float32, rngs=nnx.Rngs(0))
    bn.bias[...] = jnp.full((4,), 0.1)

    def loss(bn, values):
      return jnp.sum(batch_norm_relu(bn, values, real_cells=real_cells)[:, :9] * weights)  # noqa: B023

    bn_grads, x_grad = nnx.grad(loss, argnums=(0, 1))(bn, values)
    results.append(
      (
        batch_norm_relu(bn, values, real_cells=real_cells)[:, :9],
        bn.mean[...],
        bn.var[...],
        x_grad[:, :9],
        bn_grads["scale"][...],
        bn_grads["bias"][...],
      )
    )
  for ours, reference in zip(*results, strict=True):
    np.testing.assert_allclose(np.asarray(ours), np.asarray(reference), rtol=1e-5, atol=1e-6)


def numpy_convolution(x, kernel, stride, padding):
  """(..., H, W, Cin) x (kh, kw, Cin, Cout) cross-correlation, zero padding, in float64 loops."""
  x = np.pad(x.astype(np.float64), [(0, 0)] * (x.ndim - 3) + [(padding, padding)] * 2 + [(0, 0)])
  kh, kw = kernel.shape[:2]
  out_h, out_w = (x.shape[-3] - kh) // stride + 1, (x.shape[-2] - kw) // stride + 1
  y = np.zeros((*x.shape[:-3], out_h, out_w, kernel.shape[-1]))
  for i in range(out_h):
    for j in range(out_w):
      patch = x[..., i * stride : i * stride + kh, j * stride : j * stride + kw, :]
      y[..., i, j, :] = np.einsum("...abc,abcd->...d", patch, kernel)
  return y


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("dtype,tolerance", [(jnp.float32, 1e-5), (jnp.bfloat16, 5e-2)])
def test_inference_folds_bn_into_the_convolution_exactly(relu, dtype, tolerance):
  """Running statistics: ConvBN (stride 2, padding 1, two batch axes) is the numpy convolution
  followed by the running-statistics BN, though it runs as one convolution with a bias."""
  rng = np.random.default_rng(3)
  layer = ConvBN(5, 6, 3, strides=2, padding=1, relu=relu, dtype=dtype, rngs=nnx.Rngs(0))
  layer.bn.scale[...] = jnp.asarray(rng.uniform(0.5, 2.0, 6), jnp.float32)
  layer.bn.bias[...] = jnp.asarray(rng.normal(0.0, 0.5, 6), jnp.float32)
  layer.bn.mean[...] = jnp.asarray(rng.normal(0.0, 1.0, 6), jnp.float32)
  layer.bn.var[...] = jnp.asarray(rng.uniform(0.2, 3.0, 6), jnp.float32)
  layer.eval()
  x = rng.normal(size=(2, 3, 9, 8, 5)).astype(np.float32)
  out = layer(jnp.asarray(x))
  assert out.dtype == dtype and out.shape == (2, 3, 5, 4, 6)
  kernel = np.asarray(layer.conv.kernel[...], np.float64)
  expected = (numpy_convolution(x, kernel, 2, 1) - np.asarray(layer.bn.mean[...])) / np.sqrt(
    np.asarray(layer.bn.var[...], np.float64) + EPS
  ) * np.asarray(layer.bn.scale[...]) + np.asarray(layer.bn.bias[...])
  expected = np.maximum(expected, 0) if relu else expected
  np.testing.assert_allclose(np.asarray(out, np.float64), expected, rtol=tolerance, atol=tolerance)
