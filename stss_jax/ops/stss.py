"""The spatio-temporal self-similarity (STSS) transform.

Index conventions (docs/conventions.md): for a window (L, U, V),
``stss[b, t, h, w, l, u, v] = <x̂[b, t, h, w], x̂[b, t + l - L//2, h + u - U//2, w + v - V//2]>``
with x̂ the feature vector divided by ``sqrt(sum_c x^2 + 1e-6)``; neighbours outside the clip
(in time or space) contribute zero. With a set of temporal offsets instead of the centred L,
entry i compares frame t with frame t + offsets[i]: the centred window is the offsets
-(L//2), ..., L//2 in that order.
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


def check_temporal_offsets(offsets: Sequence[int]) -> tuple[int, ...]:
  """Returns `offsets` as a tuple of distinct ints, or raises ValueError naming them."""
  try:
    values = tuple(int(o) for o in offsets)
  except (TypeError, ValueError) as e:
    raise ValueError(
      f"temporal_offsets must be a sequence of integer frame offsets, got {offsets!r}"
    ) from e
  if not values or any(v != o for v, o in zip(values, offsets)) or len(set(values)) != len(values):
    raise ValueError(
      f"temporal_offsets must be distinct integers (e.g. (-1, 1)), at least one, got {offsets!r}"
    )
  return values


def resolve_temporal_offsets(
  window: Sequence[int], temporal_offsets: Sequence[int] | None
) -> tuple[int, ...]:
  """The frame offsets the STSS compares: `temporal_offsets`, or the centred window's
  -(L//2)..L//2."""
  L = check_window(window)[0]
  if temporal_offsets is None or len(temporal_offsets) == 0:
    return tuple(range(-(L // 2), L // 2 + 1))
  return check_temporal_offsets(temporal_offsets)


def l2_normalize(features: jax.Array, axis: int = -1) -> jax.Array:
  """Divides each feature vector by sqrt(sum of squares + 1e-6), in at least float32."""
  features = features.astype(jnp.promote_types(features.dtype, jnp.float32))
  return features * jax.lax.rsqrt(jnp.sum(features * features, axis=axis, keepdims=True) + NORM_EPS)


IMPLEMENTATIONS = ("auto", "shift", "matmul", "gather")
# The matmul and gather forms hold every frame pair's HW x HW correlation (and matmul a
# (HW, U*V, HW) selection matrix): fine at SELFY's 14x14, not at 56x56.
MATMUL_MAX_POSITIONS = 1024


def stss(
  features: jax.Array,
  window: Sequence[int] = (5, 9, 9),
  implementation: str = "auto",
  temporal_offsets: Sequence[int] | None = None,
  l_major: bool = False,
) -> jax.Array:
  """Cosine similarity of every position with its (L, U, V) space-time neighbourhood.

  Args:
    features: (batch, time, height, width, channels), any float dtype.
    window: (L, U, V) odd sizes: temporal, height and width extent of the neighbourhood.
    temporal_offsets: None or () for the centred window of L frames; else the frames compared,
      as offsets from the query's frame (e.g. (1,) forward only, (-1, 1), (1, 2, 3)), in which
      case L is ignored and the output's l axis has one entry per offset, in the order given.
    implementation: "shift" (shifted windows, the reference, best on CPU), "matmul" (frame-pair
      correlations on the matrix units, then each window selected by a second product with a 0/1
      matrix), "gather" (the same correlations, then each window copied out by a gather; the
      fastest in the SELFY block on GPUs) or "auto" (gather on GPUs, matmul on other
      accelerators, shift on CPU, and shift wherever the maps are too large). matmul and gather hold
      the full HW x HW correlation of every frame pair, so they take maps of at most 1024 positions.
    l_major: return (batch, time, L, height, width, U, V), the order the gather form writes; the
      SELFY block reads it.

  Returns:
    (batch, time, height, width, L, U, V) similarities in the input dtype (L = the number of
    offsets); products are accumulated in float32 whatever the input dtype. Every form takes
    any set of offsets.
  """
  _, U, V = check_window(window)
  offsets = resolve_temporal_offsets(window, temporal_offsets)
  if features.ndim != 5:
    raise ValueError(
      "stss expects features of shape (batch, time, height, width, channels), "
      f"got rank {features.ndim} shape {features.shape}"
    )
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(
      f"stss implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}"
    )
  positions = features.shape[2] * features.shape[3]
  if implementation == "auto":
    backend = jax.default_backend()
    if positions > MATMUL_MAX_POSITIONS or backend == "cpu":
      implementation = "shift"
    else:
      implementation = "gather" if backend == "gpu" else "matmul"
  if implementation in ("matmul", "gather") and positions > MATMUL_MAX_POSITIONS:
    raise ValueError(
      f"stss implementation {implementation!r} handles at most {MATMUL_MAX_POSITIONS} positions "
      "per frame, "
      f"got {features.shape[2]}x{features.shape[3]}; use 'shift'"
    )
  forms = {
    "shift": _stss_shift,
    "matmul": _stss_matmul,
    "gather": _stss_gather,
  }
  return _stss(features, offsets, (U, V), forms[implementation], bool(l_major))


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _stss(
  features: jax.Array,
  offsets: tuple[int, ...],
  plane: tuple[int, int],
  implementation,
  l_major: bool,
) -> jax.Array:
  # One named jit around either form, so that the traced program shows "_stss" for complexity
  # counting whichever form runs.
  return implementation(features, offsets, plane, l_major)


def _in_order(similarities: jax.Array, l_major: bool, written_l_major: bool) -> jax.Array:
  """(B, T, H, W, L, U, V) similarities, or (B, T, L, H, W, U, V) if written_l_major, in the order
  asked for (XLA drops a transpose followed by its inverse)."""
  if l_major == written_l_major:
    return similarities
  return jnp.moveaxis(similarities, 2, 4) if written_l_major else jnp.moveaxis(similarities, 4, 2)


def _compute_dtype(dtype) -> jnp.dtype:
  """The products' input dtype: bf16/f16 as they are (the matrix units take them), anything else
  at least float32."""
  dtype = jnp.dtype(dtype)
  return dtype if dtype.itemsize < 4 else jnp.promote_types(dtype, jnp.float32)


def _frame_pair_correlation(
  features: jax.Array, offsets: tuple[int, ...]
) -> tuple[jax.Array, jnp.dtype, jax.lax.Precision | None]:
  """Correlates every frame t with frame t + o for each offset o (zeros past the clip's ends) as
  one (HW x HW) matrix product. Returns the (B, T, HW, L, HW) correlation, L = len(offsets)
  (dot_general's own output order, so no transpose of it is written), its dtype and the
  products' precision."""
  batch, time, height, width, channels = features.shape
  # bf16/f16 inputs feed the matrix units as they are (float32 accumulation inside the product,
  # results stored in the input dtype, which halves the bytes of the HW x HW correlation); float32
  # inputs ask for full float32 products, so that no TF32 rounding creeps into the reference dtype.
  compute = _compute_dtype(features.dtype)
  precision = None if compute.itemsize < 4 else jax.lax.Precision.HIGHEST
  queries = l2_normalize(features).astype(compute).reshape(batch, time, height * width, channels)
  pad = max(abs(o) for o in offsets)
  padded = jnp.pad(queries, ((0, 0), (pad, pad), (0, 0), (0, 0)))
  neighbours = jnp.stack(
    [padded[:, pad + o : pad + o + time] for o in offsets], axis=2
  )  # (B, T, L, HW, C)
  correlation = jax.lax.dot_general(
    queries,
    neighbours,
    (((3,), (4,)), ((0, 1), (0, 1))),
    precision=precision,
    preferred_element_type=compute,
  )
  return correlation, compute, precision


def _stss_matmul(
  features: jax.Array, offsets: tuple[int, ...], plane: tuple[int, int], l_major: bool
) -> jax.Array:
  """Frame-pair correlations, then each position's U x V window picked out of its row by a
  constant 0/1 matrix (a second product): every pass and gradient on the matrix units."""
  L, (U, V) = len(offsets), plane
  batch, time, height, width, _ = features.shape
  correlation, compute, precision = _frame_pair_correlation(features, offsets)
  selection = jnp.asarray(_window_selection(height, width, U, V), compute)
  # Each output picks exactly one correlation (or none): exact in any dtype.
  similarities = jnp.einsum(
    "btnlm,nkm->btnlk", correlation, selection, precision=precision, preferred_element_type=compute
  )
  return _in_order(similarities.reshape(batch, time, height, width, L, U, V), l_major, False)


def _neighbour(
  n: np.ndarray, u: np.ndarray, v: np.ndarray, height: int, width: int, U: int, V: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Row and column of window cell (u, v) of flat position n, and whether it is inside the frame."""
  hh, ww = n // width + u - U // 2, n % width + v - V // 2
  return hh, ww, (hh >= 0) & (hh < height) & (ww >= 0) & (ww < width)


@functools.lru_cache(maxsize=16)
def _window_selection(height: int, width: int, U: int, V: int) -> np.ndarray:
  """(HW, U*V, HW) with a 1 where window cell (u, v) of position n is position m (inside the
  frame)."""
  n, u, v = np.meshgrid(np.arange(height * width), np.arange(U), np.arange(V), indexing="ij")
  hh, ww, inside = _neighbour(n, u, v, height, width, U, V)
  selection = np.zeros((height * width, U * V, height * width), np.float32)
  selection[n[inside], (u * V + v)[inside], (hh * width + ww)[inside]] = 1.0
  return selection


def _stss_gather(
  features: jax.Array, offsets: tuple[int, ...], plane: tuple[int, int], l_major: bool
) -> jax.Array:
  """Frame-pair correlations, then each position's U x V window copied out of its row by a
  gather with constant indices (whose gradient is another gather, see _pick_windows)."""
  L, (U, V) = len(offsets), plane
  batch, time, height, width, _ = features.shape
  correlation, _, _ = _frame_pair_correlation(features, offsets)
  rows = correlation.reshape(batch * time, -1)
  windows = _pick_windows(rows, height, width, (L, U, V)).reshape(
    batch, time, L, height, width, U, V
  )
  # Written l-major, the order the SELFY block reads.
  return _in_order(windows, l_major, True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _pick_windows(
  rows: jax.Array, height: int, width: int, window: tuple[int, int, int]
) -> jax.Array:
  """(R, HW*L*HW) correlations, (n, l, m) order -> (R, L*HW*U*V) window entries, (l, n, u, v)
  order, zero outside the frame."""
  source, inside = _window_index(height, width, window)
  return jnp.where(inside, _take_columns(rows, source), 0)


def _pick_windows_fwd(rows, height, width, window):
  return _pick_windows(rows, height, width, window), None


def _pick_windows_bwd(height, width, window, _, cotangent):
  # Each correlation entry feeds at most one window entry, so the transpose of the gather is
  # another gather (no scatter-add): every entry reads the cotangent of the window cell it fed.
  target, fed = _correlation_index(height, width, window)
  return (jnp.where(fed, _take_columns(cotangent, target), 0),)


_pick_windows.defvjp(_pick_windows_fwd, _pick_windows_bwd)


def _take_columns(rows: jax.Array, columns: np.ndarray) -> jax.Array:
  """rows[:, columns] written as a gather batched over the rows: XLA:GPU then keeps the rows
  major in its output (jnp.take makes the rows a slice dimension, which it moves innermost)."""
  indices = jnp.broadcast_to(jnp.asarray(columns)[None, :, None], (rows.shape[0], columns.size, 1))
  dimensions = jax.lax.GatherDimensionNumbers(
    offset_dims=(),
    collapsed_slice_dims=(1,),
    start_index_map=(1,),
    operand_batching_dims=(0,),
    start_indices_batching_dims=(0,),
  )
  return jax.lax.gather(
    rows, indices, dimensions, (1, 1), mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS
  )


@functools.lru_cache(maxsize=16)
def _window_index(
  height: int, width: int, window: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
  """For each (l, n, u, v) window entry: its flat index into a (n, l, m) correlation row, and
  whether (u, v) falls inside the frame."""
  L, U, V = window
  l, n, u, v = np.meshgrid(
    np.arange(L), np.arange(height * width), np.arange(U), np.arange(V), indexing="ij"
  )
  hh, ww, inside = _neighbour(n, u, v, height, width, U, V)
  positions = height * width
  source = (n * L + l) * positions + np.clip(hh, 0, height - 1) * width + np.clip(ww, 0, width - 1)
  return source.reshape(-1).astype(np.int32), inside.reshape(-1)


@functools.lru_cache(maxsize=16)
def _correlation_index(
  height: int, width: int, window: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
  """The inverse of _window_index: for each (n, l, m) correlation entry, the flat index of the
  window entry it feeds, and whether it feeds one."""
  source, inside = _window_index(height, width, window)
  entries = height * width * window[0] * height * width
  target = np.zeros(entries, np.int32)
  fed = np.zeros(entries, bool)
  target[source[inside]] = np.flatnonzero(inside)
  fed[source[inside]] = True
  return target, fed


def _stss_shift(
  features: jax.Array, offsets: tuple[int, ...], plane: tuple[int, int], l_major: bool
) -> jax.Array:
  """Multiplies the queries with shifted copies of the padded clip, one (l, u) slab at a time."""
  L, (U, V) = len(offsets), plane
  batch, time, height, width, channels = features.shape
  queries = l2_normalize(features)
  pad = max(abs(o) for o in offsets)
  neighbours = jnp.pad(queries, ((0, 0), (pad, pad), (U // 2, U // 2), (V // 2, V // 2), (0, 0)))
  first_frames = np.asarray([pad + o for o in offsets])

  def row_of_offsets(_, lu):
    # The (t, h)-shifted slab of one (l, u); the V width offsets slide inside it. Scanning over
    # (l, u) keeps the program small: it compiles in a fraction of the time of 405 unrolled slices.
    slab = jax.lax.dynamic_slice(
      neighbours,
      (0, jnp.asarray(first_frames, lu.dtype)[lu // U], lu % U, 0, 0),
      (batch, time, height, width + V - 1, channels),
    )
    row = [jnp.sum(queries * slab[:, :, :, v : v + width], axis=-1) for v in range(V)]
    return None, jnp.stack(row, axis=-1)

  _, rows = jax.lax.scan(row_of_offsets, None, jnp.arange(L * U))  # (L*U, B, T, H, W, V)
  similarities = jnp.moveaxis(rows, 0, 4).reshape(batch, time, height, width, L, U, V)
  return _in_order(similarities.astype(features.dtype), l_major, False)
