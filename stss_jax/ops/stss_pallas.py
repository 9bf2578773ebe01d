"""The STSS as two Pallas kernels, forward and backward, that keep each correlation on chip.

The gather form (stss.py) writes every frame pair's full HW x HW correlation to memory and then
copies each window out of it. Here a forward program takes a band of `rows` query rows of one
frame and one compared frame, loads the band's neighbourhood in that frame (the rows within U//2
above and below, whole width), multiplies the two on the matrix units, and stores only the
correlation entries that fall inside a query's (U, V) window: entry (query m, neighbour k) lands
on window cell u = row(k) - row(m) + U//2, v = col(k) - col(m) + V//2 when both are in range.
Cells whose neighbour lies outside the frame or the clip are never stored, so the output starts
as zeros.

The backward writes each band's feature gradient without atomics: a position gets its gradient
as a query (the window cotangents times the neighbours) and as a neighbour of the queries in the
frames that compare with it (the transposed cotangents times those queries), both read with the
same band geometry. By default the two parts run as programs of their own, each writing a
float32 partial gradient, and one elementwise pass adds them.

On GPUs the kernels are compiled by Pallas' Triton backend; elsewhere they run in Pallas'
interpret mode, which is exact and slow: for tests, not for training.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from absl import logging
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

# A program's tiles: a band of query rows whose queries fit QUERY_TILE slots and whose
# neighbourhood (rows + U - 1 rows) fits NEIGHBOUR_TILE. Tiles are powers of two, so the band is the
# one with the fewest padded products per query (default_rows): for 14x14 maps and a 9x9 plane one
# row, 14 queries in 16 slots against 126 neighbours in 128 (timed in benchmarks/results/gpu.md).
QUERY_TILE = 32
NEIGHBOUR_TILE = 256
MIN_TILE = 16  # Triton's matrix product takes no operand dimension under 16


def _tile(n: int) -> int:
  return max(MIN_TILE, pl.next_power_of_2(n))


@dataclasses.dataclass(frozen=True)
class Tiling:
  """How the kernels split the work; none of it changes what they compute.

  rows: query rows per program (None: default_rows). forward_warps / backward_warps: per program
  on GPUs. backward_parts: 1, one backward program per band summing both parts of its gradient,
  or 2, the query and the neighbour parts as programs of their own, added afterwards: twice the
  programs, each half as long, which an H200 runs in less time (benchmarks/results/gpu.md, session
  18). A forward program always computes one compared frame, for the same reason.
  """

  rows: int | None = None
  forward_warps: int = 8
  backward_warps: int = 8
  backward_parts: int = 2

  def __post_init__(self):
    if self.backward_parts not in (1, 2):
      raise ValueError(f"backward_parts must be 1 or 2, got {self.backward_parts}")


@dataclasses.dataclass(frozen=True)
class _Geometry:
  """Static sizes of one call: frames (batch x time), the frame and window, the band, the layout."""

  frames: int
  time: int
  height: int
  width: int
  channels: int
  offsets: tuple[int, ...]
  plane: tuple[int, int]
  l_major: bool  # windows stored (frame, l, h, w, u, v); else (frame, h, w, l, u, v)
  tiling: Tiling  # its rows resolved

  @property
  def rows(self) -> int:
    """Query rows per program."""
    return self.tiling.rows

  @property
  def bands(self) -> int:
    return -(-self.height // self.rows)

  @property
  def neighbour_rows(self) -> int:
    return self.rows + self.plane[0] - 1

  @property
  def query_tile(self) -> int:
    return _tile(self.rows * self.width)

  @property
  def neighbour_tile(self) -> int:
    return _tile(self.neighbour_rows * self.width)

  @property
  def channel_tile(self) -> int:
    return _tile(self.channels)

  @property
  def windows_size(self) -> int:
    return (
      self.frames * len(self.offsets) * self.height * self.width * self.plane[0] * self.plane[1]
    )

  @property
  def features_size(self) -> int:
    return self.frames * self.height * self.width * self.channels


def default_rows(height: int, width: int, plane: tuple[int, int]) -> int:
  """Query rows per program: of the bands within QUERY_TILE and NEIGHBOUR_TILE (one row if none
  is), the one with the fewest padded products per query, the fewer rows on a tie."""

  def padded_products_per_query(rows):
    return _tile(rows * width) * _tile((rows + plane[0] - 1) * width) / (rows * width)

  fitting = [
    rows
    for rows in range(1, height + 1)
    if _tile(rows * width) <= QUERY_TILE and _tile((rows + plane[0] - 1) * width) <= NEIGHBOUR_TILE
  ]
  return min(fitting or [1], key=lambda rows: (padded_products_per_query(rows), rows))


def stss_windows(
  normalised: jax.Array,
  offsets: tuple[int, ...],
  plane: tuple[int, int],
  l_major: bool = True,
  tiling: Tiling = Tiling(),
) -> jax.Array:
  """(B, T, H, W, C) unit feature vectors -> window similarities, (B, T, L, H, W, U, V) if
  `l_major`, else (B, T, H, W, L, U, V).

  Products accumulate in float32 (float64 inputs: in their own precision); the output has the
  input dtype.
  """
  if _interpret():
    _warn_interpreted(jax.default_backend())
  batch, time, height, width, channels = normalised.shape
  tiling = dataclasses.replace(tiling, rows=tiling.rows or default_rows(height, width, plane))
  geometry = _Geometry(
    batch * time, time, height, width, channels, tuple(offsets), tuple(plane), l_major, tiling
  )
  if max(geometry.windows_size, 2 * geometry.features_size) >= 2**31:
    # The kernels index in int32.
    raise ValueError(
      f"the 'pallas' STSS indexes at most 2**31 - 1 entries; features {normalised.shape} with "
      f"{len(offsets)} offsets and a {plane} plane give {geometry.windows_size} similarities: "
      "use fewer clips per device, or the 'shift' form ('gather' for maps of up to 1024 positions)"
    )
  flat = _windows(normalised.reshape(-1), geometry)
  if l_major:
    return flat.reshape(batch, time, len(offsets), height, width, *plane)
  return flat.reshape(batch, time, height, width, len(offsets), *plane)


def _interpret() -> bool:
  return jax.default_backend() != "gpu"


@functools.cache
def _warn_interpreted(backend: str) -> None:
  logging.warning(
    "The 'pallas' STSS runs in Pallas' interpret mode on %s: exact, but slow; "
    "its kernels compile on GPUs only.",
    backend,
  )


def _accumulator(dtype) -> jnp.dtype:
  return jnp.promote_types(dtype, jnp.float32)


def _precision(dtype):
  # bf16/f16 feed the matrix units as they are. Compiled, float32 takes Triton's three-TF32-product
  # split, which keeps float32's accuracy on the matrix units (a plain float32 product runs on
  # the CUDA cores: 7.6 ms forward + backward on an H200, 20x the gather form); interpret mode
  # takes full float32 (and float64) products, as the other forms do.
  if jnp.dtype(dtype).itemsize < 4:
    return None
  if _interpret():
    return jax.lax.Precision.HIGHEST
  return jax.lax.DotAlgorithmPreset.TF32_TF32_F32_X3


def _matmul(a: jax.Array, b: jax.Array, transpose_b: bool, dtype) -> jax.Array:
  contract = 1 if transpose_b else 0
  return jax.lax.dot_general(
    a,
    b,
    (((1,), (contract,)), ((), ())),
    precision=_precision(dtype),
    preferred_element_type=_accumulator(dtype),
  )


def _offset_at(offsets: tuple[int, ...], l: jax.Array) -> jax.Array:
  """offsets[l] for a traced index l, as scalar selects (no table to load)."""
  value = jnp.int32(offsets[0])
  for i, offset in enumerate(offsets[1:], 1):
    value = jnp.where(l == i, offset, value)
  return value


class _Band:
  """Index arithmetic of one program: its band of query rows and their neighbourhood."""

  def __init__(self, g: _Geometry):
    self.g = g
    self.frame = pl.program_id(0)
    self.t = self.frame % g.time
    self.top = pl.program_id(1) * g.rows
    m = jnp.arange(g.query_tile)
    self.row = m // g.width  # band row of each query slot
    self.col = m % g.width
    self.h = self.top + self.row
    self.query_ok = (self.row < g.rows) & (self.h < g.height)
    k = jnp.arange(g.neighbour_tile)
    self.near_row = k // g.width  # neighbourhood row of each neighbour slot
    self.near_col = k % g.width
    self.near_h = self.top - g.plane[0] // 2 + self.near_row
    self.near_ok = (
      (self.near_row < g.neighbour_rows) & (self.near_h >= 0) & (self.near_h < g.height)
    )
    self.c = jnp.arange(g.channel_tile)

  def load_band(self, ref, frame) -> jax.Array:
    """The band's own positions of `frame`: (query_tile, channel_tile), zeros in unused slots."""
    g = self.g
    first = (frame * g.height + self.top) * g.width
    return self._load_rows(ref, first + jnp.arange(g.query_tile), self.query_ok)

  def load_neighbourhood(self, ref, frame, frame_ok) -> jax.Array:
    """The band's neighbourhood rows of `frame`: (neighbour_tile, channel_tile), zeros outside."""
    g = self.g
    first = (frame * g.height + self.top - g.plane[0] // 2) * g.width
    return self._load_rows(ref, first + jnp.arange(g.neighbour_tile), self.near_ok & frame_ok)

  def _load_rows(self, ref, position, ok) -> jax.Array:
    # Whole rows of a band are consecutive positions: `position` is a start plus an arange, which
    # lets Triton see contiguous channels and load them as vectors. Masked lanes may point outside
    # the array; they are never read.
    g = self.g
    ok = ok[:, None] & (self.c < g.channels)[None, :]
    return plt.load(ref.at[position[:, None] * g.channels + self.c[None, :]], mask=ok, other=0)

  def window_index(
    self, frame, l, query_h, query_w, near_h, near_w, ok
  ) -> tuple[jax.Array, jax.Array]:
    """Flat index of the window cell that pairs each query (row query_h, column query_w of
    `frame`) with each neighbour (near_h, near_w) in the windows of offset l, and whether there is
    one."""
    g = self.g
    L = len(g.offsets)
    U, V = g.plane
    u = near_h - query_h + U // 2
    v = near_w - query_w + V // 2
    ok = ok & (u >= 0) & (u < U) & (v >= 0) & (v < V)
    if g.l_major:
      window = ((frame * L + l) * g.height + query_h) * g.width + query_w
    else:
      window = ((frame * g.height + query_h) * g.width + query_w) * L + l
    return (window * U + u) * V + v, ok

  def pairs(self, frame, l, ok) -> tuple[jax.Array, jax.Array]:
    """window_index with the band's positions as queries (rows) and its neighbourhood as
    neighbours (columns)."""
    return self.window_index(
      frame,
      l,
      self.h[:, None],
      self.col[:, None],
      self.near_h[None, :],
      self.near_col[None, :],
      self.query_ok[:, None] & self.near_ok[None, :] & ok,
    )

  def transposed_pairs(self, frame, l, ok) -> tuple[jax.Array, jax.Array]:
    """window_index with the neighbourhood's positions as queries (columns) of `frame` and the
    band's own positions as their neighbours (rows)."""
    return self.window_index(
      frame,
      l,
      self.near_h[None, :],
      self.near_col[None, :],
      self.h[:, None],
      self.col[:, None],
      self.query_ok[:, None] & self.near_ok[None, :] & ok,
    )


def _store_index(index: jax.Array, ok: jax.Array, size: int) -> jax.Array:
  """`index` where `ok`. Compiled, masked lanes store nothing; Pallas' interpret mode writes the
  old value back through every masked lane, so there each gets a slot of its own past `size`
  (_trash), where it cannot overwrite a real store to the same slot."""
  if not _interpret():
    return index
  lane = jnp.arange(ok.size).reshape(ok.shape)
  return jnp.where(ok, index, size + lane)


def _trash(slots: int) -> int:
  return slots if _interpret() else 0


def _forward_kernel(q_ref, _, out_ref, *, g: _Geometry):
  band = _Band(g)
  l = pl.program_id(2)
  offset = _offset_at(g.offsets, l)
  frame_ok = (band.t + offset >= 0) & (band.t + offset < g.time)
  queries = band.load_band(q_ref, band.frame)
  neighbours = band.load_neighbourhood(q_ref, band.frame + offset, frame_ok)
  correlation = _matmul(queries, neighbours, True, q_ref.dtype)
  index, ok = band.pairs(band.frame, l, frame_ok)
  plt.store(
    out_ref.at[_store_index(index, ok, g.windows_size)], correlation.astype(out_ref.dtype), mask=ok
  )


def _gradient_part(band: _Band, q_ref, cotangent_ref, as_neighbour: bool) -> jax.Array:
  """The band's gradient, summed over offsets, as queries (each window cell's cotangent times the
  neighbour it compared with, in frame t + offset) or as neighbours (the queries of frame
  t - offset whose windows hold the band's positions, times those cells' cotangents; they lie in
  the band's neighbourhood rows of that frame, since windows are symmetric in extent)."""
  g = band.g
  grad = jnp.zeros((g.query_tile, g.channel_tile), _accumulator(q_ref.dtype))
  for l, offset in enumerate(g.offsets):
    shift = -offset if as_neighbour else offset
    other_ok = (band.t + shift >= 0) & (band.t + shift < g.time)
    others = band.load_neighbourhood(q_ref, band.frame + shift, other_ok)
    if as_neighbour:
      index, ok = band.transposed_pairs(band.frame + shift, l, other_ok)
    else:
      index, ok = band.pairs(band.frame, l, other_ok)
    cotangent = plt.load(cotangent_ref.at[index], mask=ok, other=0)
    grad += _matmul(cotangent.astype(q_ref.dtype), others, False, q_ref.dtype)
  return grad


def _backward_kernel(q_ref, cotangent_ref, grad_ref, *, g: _Geometry):
  band = _Band(g)
  ok = band.query_ok[:, None] & (band.c < g.channels)[None, :]
  position = (band.frame * g.height + band.top) * g.width + jnp.arange(
    g.query_tile
  )  # contiguous rows
  index = position[:, None] * g.channels + band.c[None, :]
  size = g.tiling.backward_parts * g.features_size

  def store(grad, part):
    plt.store(
      grad_ref.at[_store_index(index + part * g.features_size, ok, size)],
      grad.astype(grad_ref.dtype),
      mask=ok,
    )

  if g.tiling.backward_parts == 1:
    store(
      _gradient_part(band, q_ref, cotangent_ref, False)
      + _gradient_part(band, q_ref, cotangent_ref, True),
      0,
    )
    return
  for part in (0, 1):  # 0: as queries, 1: as neighbours

    @pl.when(pl.program_id(2) == part)
    def _(part=part):
      store(_gradient_part(band, q_ref, cotangent_ref, as_neighbour=part == 1), part)


def _compiler_params(warps: int):
  return None if _interpret() else plt.CompilerParams(num_warps=warps, num_stages=1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _windows(flat: jax.Array, g: _Geometry) -> jax.Array:
  size = g.windows_size + _trash(g.query_tile * g.neighbour_tile)
  zeros = jnp.zeros((size,), flat.dtype)
  windows = pl.pallas_call(
    functools.partial(_forward_kernel, g=g),
    out_shape=jax.ShapeDtypeStruct((size,), flat.dtype),
    grid=(g.frames, g.bands, len(g.offsets)),
    input_output_aliases={1: 0},
    interpret=_interpret(),
    compiler_params=_compiler_params(g.tiling.forward_warps),
    name="stss_windows",
  )(flat, zeros)
  return windows[: g.windows_size] if size > g.windows_size else windows


def _windows_fwd(flat, g):
  return _windows(flat, g), flat


def _windows_bwd(g, flat, cotangent):
  parts = g.tiling.backward_parts
  size = parts * g.features_size
  # Two parts are added after the kernel: each is kept in float32 so that the sum rounds once.
  dtype = flat.dtype if parts == 1 else _accumulator(flat.dtype)
  grad = pl.pallas_call(
    functools.partial(_backward_kernel, g=g),
    out_shape=jax.ShapeDtypeStruct((size + _trash(g.query_tile * g.channel_tile),), dtype),
    grid=(g.frames, g.bands, parts),
    interpret=_interpret(),
    compiler_params=_compiler_params(g.tiling.backward_warps),
    name="stss_windows_grad",
  )(flat, cotangent.astype(flat.dtype))
  grad = grad[:size].reshape(parts, g.features_size)
  return (grad.sum(axis=0).astype(flat.dtype) if parts > 1 else grad[0],)


_windows.defvjp(_windows_fwd, _windows_bwd)
