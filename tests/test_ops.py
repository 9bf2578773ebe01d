"""STSS and temporal shift against naive numpy loops written from docs/conventions.md."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from stss_jax import ops

# Every STSS form.
FORMS = ["shift", "matmul", "gather"]


def naive_stss(x, window):
  """Loop over every position and offset; zero outside the clip."""
  L, U, V = window
  B, T, H, W, C = x.shape
  x = x.astype(np.float64)
  xn = x / np.sqrt((x**2).sum(-1, keepdims=True) + 1e-6)
  out = np.zeros((B, T, H, W, L, U, V))
  for b, t, h, w in itertools.product(range(B), range(T), range(H), range(W)):
    for l, u, v in itertools.product(range(L), range(U), range(V)):
      tt, hh, ww = t + l - L // 2, h + u - U // 2, w + v - V // 2
      if 0 <= tt < T and 0 <= hh < H and 0 <= ww < W:
        out[b, t, h, w, l, u, v] = xn[b, t, h, w] @ xn[b, tt, hh, ww]
  return out


@pytest.mark.parametrize(
  "shape,window",
  [
    ((2, 4, 5, 6, 8), (3, 3, 3)),
    ((1, 3, 4, 4, 5), (5, 9, 9)),  # window larger than the clip and the frame
    ((1, 5, 3, 7, 4), (1, 5, 3)),
    ((2, 2, 6, 3, 3), (3, 1, 7)),
    ((1, 1, 1, 1, 2), (1, 1, 1)),
  ],
)
@pytest.mark.parametrize("implementation", FORMS)
def test_stss_matches_naive_loop(shape, window, implementation):
  x = np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32)
  got = np.asarray(jax.jit(ops.stss, static_argnums=(1, 2))(x, window, implementation))
  assert got.shape == shape[:4] + window
  np.testing.assert_allclose(got, naive_stss(x, window), atol=2e-6)


@pytest.mark.parametrize("implementation", FORMS)
def test_stss_bf16_accumulates_in_float32(implementation):
  x = np.random.default_rng(0).normal(size=(1, 3, 4, 4, 256)).astype(np.float32)
  x_bf16 = jnp.asarray(x, jnp.bfloat16)
  got = ops.stss(x_bf16, (3, 3, 3), implementation)
  assert got.dtype == jnp.bfloat16
  reference = naive_stss(np.asarray(x_bf16.astype(jnp.float32)), (3, 3, 3))
  # Rounding to bf16 (8 bits of mantissa) of the output, and for matmul of the unit vectors,
  # separates the two; summing 256 products in bf16 would be ten times worse.
  np.testing.assert_allclose(np.asarray(got, np.float32), reference, atol=8e-3)


@pytest.mark.parametrize("implementation", FORMS)
def test_stss_gradients_match_finite_differences(implementation):
  with jax.enable_x64(True):
    x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 3, 3, 4, 3)), jnp.float64)
    check_grads(
      lambda f: ops.stss(f, (3, 3, 3), implementation), (x,), order=1, modes=("rev",), eps=1e-4
    )


@pytest.mark.parametrize("implementation", FORMS)
def test_stss_keeps_clips_apart(implementation):
  """A non-finite clip leaves its neighbours' similarities and gradients as they are alone: no
  form reads across a clip's ends."""
  x = np.random.default_rng(6).normal(size=(3, 3, 4, 4, 5)).astype(np.float32)
  x[0] = np.nan
  x[2, 1, 2, 2] = np.inf
  cotangent = np.random.default_rng(7).normal(size=(3, 3, 4, 4, 3, 3, 3)).astype(np.float32)

  def similarities_and_gradient(clips, cotangent):
    out, pullback = jax.vjp(lambda f: ops.stss(f, (3, 3, 3), implementation), jnp.asarray(clips))
    return np.asarray(out), np.asarray(pullback(jnp.asarray(cotangent))[0])

  together = similarities_and_gradient(x, cotangent)
  alone = similarities_and_gradient(x[1:2], cotangent[1:2])
  for got, expected in zip(together, alone):
    assert np.isfinite(got[1]).all()
    np.testing.assert_allclose(got[1], expected[0], atol=1e-6)


def naive_stss_offsets(x, offsets, U, V):
  """The same loop over a set of temporal offsets: entry i compares frame t with t + offsets[i]."""
  B, T, H, W, C = x.shape
  x = x.astype(np.float64)
  xn = x / np.sqrt((x**2).sum(-1, keepdims=True) + 1e-6)
  out = np.zeros((B, T, H, W, len(offsets), U, V))
  for b, t, h, w in itertools.product(range(B), range(T), range(H), range(W)):
    for i, u, v in itertools.product(range(len(offsets)), range(U), range(V)):
      tt, hh, ww = t + offsets[i], h + u - U // 2, w + v - V // 2
      if 0 <= tt < T and 0 <= hh < H and 0 <= ww < W:
        out[b, t, h, w, i, u, v] = xn[b, t, h, w] @ xn[b, tt, hh, ww]
  return out


@pytest.mark.parametrize(
  "offsets,shape,plane",
  [
    ((1,), (2, 4, 5, 6, 8), (3, 3)),  # forward only
    ((-1, 1), (1, 5, 4, 4, 5), (5, 5)),  # both directions, no self-similarity
    ((-2, -1, 0, 1, 2), (1, 3, 3, 5, 4), (3, 5)),  # the centred window of 5, longer than the clip
    ((1, 2, 3), (2, 4, 3, 3, 3), (1, 3)),
    ((3, -2, 0), (1, 6, 4, 3, 4), (3, 1)),  # any order: the output keeps it
  ],
)
@pytest.mark.parametrize("implementation", FORMS)
def test_stss_with_temporal_offsets_matches_naive_loop(offsets, shape, plane, implementation):
  x = np.random.default_rng(sum(shape) + len(offsets)).normal(size=shape).astype(np.float32)
  got = np.asarray(ops.stss(x, (1, *plane), implementation, temporal_offsets=offsets))
  assert got.shape == shape[:4] + (len(offsets), *plane)
  np.testing.assert_allclose(got, naive_stss_offsets(x, offsets, *plane), atol=2e-6)


@pytest.mark.parametrize("implementation", FORMS)
def test_stss_offsets_bf16_and_gradients(implementation):
  x = np.random.default_rng(3).normal(size=(1, 4, 3, 3, 64)).astype(np.float32)
  x_bf16 = jnp.asarray(x, jnp.bfloat16)
  got = ops.stss(x_bf16, (1, 3, 3), implementation, temporal_offsets=(1, 2))
  assert got.dtype == jnp.bfloat16
  reference = naive_stss_offsets(np.asarray(x_bf16.astype(jnp.float32)), (1, 2), 3, 3)
  np.testing.assert_allclose(np.asarray(got, np.float32), reference, atol=8e-3)
  with jax.enable_x64(True):
    x64 = jnp.asarray(np.random.default_rng(4).normal(size=(1, 4, 3, 3, 3)), jnp.float64)
    check_grads(
      lambda f: ops.stss(f, (1, 3, 3), implementation, temporal_offsets=(-2, 1)),
      (x64,),
      order=1,
      modes=("rev",),
      eps=1e-4,
    )


def test_centred_offsets_are_the_centred_window():
  x = np.random.default_rng(5).normal(size=(1, 4, 4, 4, 6)).astype(np.float32)
  np.testing.assert_array_equal(
    np.asarray(ops.stss(x, (5, 3, 3), "shift", temporal_offsets=(-2, -1, 0, 1, 2))),
    np.asarray(ops.stss(x, (5, 3, 3), "shift")),
  )


@pytest.mark.parametrize("offsets", [(1, 1), (), (0.5,), "ab"])
def test_stss_rejects_bad_offsets(offsets):
  if offsets == ():
    assert (
      ops.stss(jnp.zeros((1, 2, 3, 3, 4)), (3, 3, 3), temporal_offsets=offsets).shape[4] == 3
    )  # () = centred
    return
  with pytest.raises(ValueError, match="temporal_offsets"):
    ops.stss(jnp.zeros((1, 2, 3, 3, 4)), (3, 3, 3), temporal_offsets=offsets)


def test_stss_rejects_unknown_implementation_and_oversized_matmul():
  with pytest.raises(ValueError, match="implementation"):
    ops.stss(jnp.zeros((1, 2, 3, 3, 4)), (3, 3, 3), "triton")
  for implementation in ("matmul", "gather"):
    with pytest.raises(ValueError, match="33x33"):
      ops.stss(jnp.zeros((1, 2, 33, 33, 4)), (3, 3, 3), implementation)


@pytest.mark.parametrize("window", [(4, 9, 9), (5, 0, 9), (5, 9, -1), (5, 9), (5, 9, 9, 1)])
def test_stss_rejects_bad_windows(window):
  with pytest.raises(ValueError, match="window"):
    ops.stss(jnp.zeros((1, 2, 3, 3, 4)), window)


def test_stss_rejects_wrong_rank():
  with pytest.raises(ValueError, match="rank 4"):
    ops.stss(jnp.zeros((2, 3, 3, 4)), (3, 3, 3))


def naive_shift(x, shift_div):
  B, T, H, W, C = x.shape
  fold = C // shift_div
  out = np.zeros_like(x)
  for t in range(T):
    for c in range(C):
      if c < fold:
        source = t + 1
      elif c < 2 * fold:
        source = t - 1
      else:
        source = t
      if 0 <= source < T:
        out[:, t, ..., c] = x[:, source, ..., c]
  return out


@pytest.mark.parametrize("channels,shift_div", [(16, 8), (12, 8), (9, 4)])
def test_temporal_shift_matches_naive_loop(channels, shift_div):
  x = np.random.default_rng(channels).normal(size=(2, 4, 3, 2, channels)).astype(np.float32)
  np.testing.assert_array_equal(
    np.asarray(ops.temporal_shift(x, shift_div)), naive_shift(x, shift_div)
  )


def test_temporal_shift_rejects_wrong_rank():
  with pytest.raises(ValueError, match="rank 4"):
    ops.temporal_shift(jnp.zeros((8, 3, 3, 16)))


def naive_stss_gradient(x, window, cotangent):
  """The feature gradient of sum(cotangent * stss(x)), pair by pair: each similarity
  <x̂p, x̂q> sends cotangent * x̂q to p and cotangent * x̂p to q, and x̂ = x / sqrt(|x|^2 + 1e-6)
  passes d x̂ back as (d x̂ - x̂ <x̂, d x̂>) / sqrt(|x|^2 + 1e-6)."""
  L, U, V = window
  B, T, H, W, C = x.shape
  x = x.astype(np.float64)
  norm = np.sqrt((x**2).sum(-1, keepdims=True) + 1e-6)
  xn = x / norm
  d_xn = np.zeros_like(x)
  for b, t, h, w in itertools.product(range(B), range(T), range(H), range(W)):
    for l, u, v in itertools.product(range(L), range(U), range(V)):
      tt, hh, ww = t + l - L // 2, h + u - U // 2, w + v - V // 2
      if 0 <= tt < T and 0 <= hh < H and 0 <= ww < W:
        g = cotangent[b, t, h, w, l, u, v]
        d_xn[b, t, h, w] += g * xn[b, tt, hh, ww]
        d_xn[b, tt, hh, ww] += g * xn[b, t, h, w]
  return (d_xn - xn * (xn * d_xn).sum(-1, keepdims=True)) / norm


@pytest.mark.parametrize("implementation", FORMS)
def test_l_major_is_the_same_similarities_with_l_before_h_w(implementation):
  x = np.random.default_rng(12).normal(size=(1, 3, 4, 5, 6)).astype(np.float32)
  got = np.asarray(ops.stss(x, (3, 3, 5), implementation, l_major=True))
  np.testing.assert_allclose(got, np.moveaxis(naive_stss(x, (3, 3, 5)), 4, 2), atol=2e-6)


@pytest.mark.parametrize("implementation", FORMS)
def test_stss_feature_gradients_match_the_pair_by_pair_loop(implementation):
  window = (3, 5, 3)
  rng = np.random.default_rng(11)
  x = rng.normal(size=(2, 3, 7, 5, 6)).astype(np.float32)
  cotangent = rng.normal(size=(2, 3, 7, 5) + window).astype(np.float32)
  _, pullback = jax.vjp(lambda f: ops.stss(f, window, implementation), jnp.asarray(x))
  np.testing.assert_allclose(
    np.asarray(pullback(jnp.asarray(cotangent))[0]),
    naive_stss_gradient(x, window, cotangent),
    atol=2e-5,
  )
