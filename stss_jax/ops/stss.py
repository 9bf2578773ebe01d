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


def stss(features: jax.Array, window: Sequence[int] = (5, 9, 9)) -> jax.Array:
  """Cosine similarity of every position with its (L, U, V) space-time neighbourhood.

  Args:
    features: (batch, time, height, width, channels), any float dtype.
    window: (L, U, V) odd sizes: temporal, height and width extent of the neighbourhood.

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
  return _stss(features, (L, U, V))


@functools.partial(jax.jit, static_argnums=1)
def _stss(features: jax.Array, window: tuple[int, int, int]) -> jax.Array:
  # Its own jit so that the traced program names it ("_stss") for complexity counting.
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
