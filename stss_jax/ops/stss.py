"""The spatio-temporal self-similarity (STSS) transform.

Index conventions (../shared/CONVENTIONS.md): for a window (L, U, V),
``stss[b, t, h, w, l, u, v] = <x̂[b, t, h, w], x̂[b, t + l - L//2, h + u - U//2, w + v - V//2]>``
with x̂ the feature vector divided by ``sqrt(sum_c x^2 + 1e-6)``; neighbours outside the clip
(in time or space) contribute zero.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

NORM_EPS = 1e-6  # inside the square root, as the official code


def check_window(window: Sequence[int]) -> tuple[int, int, int]:
  """Returns `window` as a tuple of three odd positive ints or raises ValueError naming it."""
  try:
    sizes = tuple(int(s) for s in window)
  except TypeError as e:
    raise ValueError(f"window must be three odd sizes (L, U, V), got {window!r}") from e
  if len(sizes) != 3 or any(s != w for s, w in zip(sizes, window)):
    raise ValueError(f"window must be three odd integer sizes (L, U, V), got {window!r}")
  bad = [s for s in sizes if s < 1 or s % 2 == 0]
  if bad:
    raise ValueError(
        f"window sizes must be odd and >= 1 so the query sits at the centre, got {window!r}"
    )
  return sizes


def l2_normalize(features: jax.Array, axis: int = -1) -> jax.Array:
  """Divides each feature vector by sqrt(sum of squares + 1e-6), in at least float32."""
  features = features.astype(jnp.promote_types(features.dtype, jnp.float32))
  return features * jax.lax.rsqrt(jnp.sum(features * features, axis=axis, keepdims=True) + NORM_EPS)


IMPLEMENTATIONS = ("auto", "shift", "matmul")
# The matmul form holds a (HW, U*V, HW) selection matrix: fine at SELFY's 14x14, not at 56x56.
MATMUL_MAX_POSITIONS = 1024


def stss(features: jax.Array, window: Sequence[int] = (5, 9, 9), implementation: str = "auto") -> jax.Array:
  """Cosine similarity of every position with its (L, U, V) space-time neighbourhood.

  Args:
    features: (batch, time, height, width, channels), any float dtype.
    window: (L, U, V) odd sizes: temporal, height and width extent of the neighbourhood.
    implementation: "shift" (shifted windows, the reference, best on CPU), "matmul" (frame-pair
      correlations on the matrix units, then a selection of each window; for maps of at most
      1024 positions) or "auto" (matmul on accelerators where it fits, else shift).

  Returns:
    (batch, time, height, width, L, U, V) similarities in the input dtype; products are
    accumulated in float32 whatever the input dtype.
  """
  L, U, V = check_window(window)
  if features.ndim != 5:
    raise ValueError(
        "stss expects features of shape (batch, time, height, width, channels), "
        f"got rank {features.ndim} shape {features.shape}"
    )
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"stss implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
  positions = features.shape[2] * features.shape[3]
  if implementation == "auto":
    fits = positions <= MATMUL_MAX_POSITIONS
    implementation = "matmul" if fits and jax.default_backend() != "cpu" else "shift"
  if implementation == "matmul":
    if positions > MATMUL_MAX_POSITIONS:
      raise ValueError(
          f"stss implementation 'matmul' handles at most {MATMUL_MAX_POSITIONS} positions per frame, "
          f"got {features.shape[2]}x{features.shape[3]}; use 'shift'"
      )
    return _stss(features, (L, U, V), _stss_matmul)
  return _stss(features, (L, U, V), _stss_shift)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _stss(features: jax.Array, window: tuple[int, int, int], implementation) -> jax.Array:
  # One named jit around either form, so that the traced program shows "_stss" for complexity
  # counting whichever form runs.
  return implementation(features, window)


def _stss_matmul(features: jax.Array, window: tuple[int, int, int]) -> jax.Array:
  """Correlates every frame with each of its L neighbour frames as one (HW x HW) matrix product,
  then picks each position's U x V window out of its row with a constant 0/1 matrix (a second
  product), so both passes and their gradients run on the matrix units with no gather."""
  L, U, V = window
  batch, time, height, width, channels = features.shape
  positions = height * width
  # bf16/f16 inputs feed the matrix units as they are (float32 accumulation inside the product,
  # results stored in the input dtype, which halves the bytes of the HW x HW correlation); float32
  # inputs ask for full float32 products, so that no TF32 rounding creeps into the reference dtype.
  low_precision = jnp.dtype(features.dtype).itemsize < 4
  compute = features.dtype if low_precision else jnp.promote_types(features.dtype, jnp.float32)
  precision = None if low_precision else jax.lax.Precision.HIGHEST
  queries = l2_normalize(features).astype(compute).reshape(batch, time, positions, channels)
  padded = jnp.pad(queries, ((0, 0), (L // 2, L // 2), (0, 0), (0, 0)))
  neighbours = jnp.stack([padded[:, l:l + time] for l in range(L)], axis=2)  # (B, T, L, HW, C)
  correlation = jnp.einsum("btnc,btlmc->btlnm", queries, neighbours, precision=precision,
                           preferred_element_type=compute)
  selection = jnp.asarray(_window_selection(height, width, U, V), compute)
  # Each output picks exactly one correlation (or none): exact in any dtype.
  similarities = jnp.einsum("btlnm,nkm->btnlk", correlation, selection, precision=precision,
                            preferred_element_type=compute)
  return similarities.reshape(batch, time, height, width, L, U, V)


@functools.lru_cache(maxsize=16)
def _window_selection(height: int, width: int, U: int, V: int) -> np.ndarray:
  """(HW, U*V, HW) with a 1 where window cell (u, v) of position n is position m (inside the frame)."""
  h, w, u, v = np.meshgrid(np.arange(height), np.arange(width), np.arange(U), np.arange(V), indexing="ij")
  hh, ww = h + u - U // 2, w + v - V // 2
  inside = (hh >= 0) & (hh < height) & (ww >= 0) & (ww < width)
  selection = np.zeros((height * width, U * V, height * width), np.float32)
  n = (h * width + w)[inside]
  k = (u * V + v)[inside]
  selection[n, k, (hh * width + ww)[inside]] = 1.0
  return selection


def _stss_shift(features: jax.Array, window: tuple[int, int, int]) -> jax.Array:
  """Multiplies the queries with shifted copies of the padded clip, one (l, u) slab at a time."""
  L, U, V = window
  batch, time, height, width, channels = features.shape
  queries = l2_normalize(features)
  neighbours = jnp.pad(
      queries, ((0, 0), (L // 2, L // 2), (U // 2, U // 2), (V // 2, V // 2), (0, 0))
  )

  def row_of_offsets(_, lu):
    # The (t, h)-shifted slab of one (l, u); the V width offsets slide inside it. Scanning over
    # (l, u) keeps the program small: it compiles in a fraction of the time of 405 unrolled slices.
    slab = jax.lax.dynamic_slice(
        neighbours, (0, lu // U, lu % U, 0, 0), (batch, time, height, width + V - 1, channels)
    )
    row = [jnp.sum(queries * slab[:, :, :, v:v + width], axis=-1) for v in range(V)]
    return None, jnp.stack(row, axis=-1)

  _, rows = jax.lax.scan(row_of_offsets, None, jnp.arange(L * U))  # (L*U, B, T, H, W, V)
  similarities = jnp.moveaxis(rows, 0, 4).reshape(batch, time, height, width, L, U, V)
  return similarities.astype(features.dtype)
