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

The aligned kernels (stss_windows' v_pitch) store every window row as a whole row of
aligned_pitch entries (16 for V = 9: 32 bytes in bf16), zeros after V, so that stores and the
backward's cotangent reads are whole aligned rows instead of the band kernels' 2-byte scatter
(which bounds those by the L1 pipe, benchmarks/results/gpu.md session 18). A program takes one
query row and one compared frame; for each window row u it correlates the query row with the
frame's row u on the matrix units and turns the (query, column) correlation into the queries'
(query, v) window row on chip: window column v is a diagonal of that tile, picked by a one-hot
select and a sum along the rows, one column at a time (a three-dimensional select went through
shared memory and ran 3-5x slower than the band kernels). The backward reads cotangent rows
whole and undoes the same select before its products.

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
# row, 14 queries in 16 slots against 126 neighbours in 128 (benchmarks/results/gpu.md, session 15).
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
  v_pitch: int | None = None  # None: (U, V) planes; else (U, v_pitch), the aligned kernels'

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
  def pitch(self) -> int:
    """Entries per window row as stored."""
    return self.v_pitch or self.plane[1]

  @property
  def windows_size(self) -> int:
    return self.frames * len(self.offsets) * self.height * self.width * self.plane[0] * self.pitch

  @property
  def features_size(self) -> int:
    return self.frames * self.height * self.width * self.channels


def default_rows(height: int, width: int, plane: tuple[int, int]) -> int:
  """Query rows per program: of the bands within QUERY_TILE and NEIGHBOUR_TILE (one row if none
  is), the one with the fewest padded products per query, the fewer rows on a tie."""

  def padded_products_per_query(rows):
    return _tile(rows * width) * _tile((rows + plane[0] - 1) * width) / (rows * width)

  fitting = [rows for rows in range(1, height + 1)
             if _tile(rows * width) <= QUERY_TILE and _tile((rows + plane[0] - 1) * width) <= NEIGHBOUR_TILE]
  return min(fitting or [1], key=lambda rows: (padded_products_per_query(rows), rows))


def stss_windows(normalised: jax.Array, offsets: tuple[int, ...], plane: tuple[int, int], l_major: bool = True,
                 tiling: Tiling = Tiling(), v_pitch: int | None = None) -> jax.Array:
  """(B, T, H, W, C) unit feature vectors -> window similarities, (B, T, L, H, W, U, V) if
  `l_major`, else (B, T, H, W, L, U, V).

  v_pitch: store each window row in v_pitch entries, zeros after the first V:
  (..., U, v_pitch) planes, from the aligned kernels (one query row per program, whose windows
  are written and read as whole aligned rows, for maps at most ALIGNED_MAX_WIDTH wide). None: (U, V)
  planes, from the band kernels.

  Products accumulate in float32 (float64 inputs: in their own precision); the output has the
  input dtype.
  """
  if _interpret():
    _warn_interpreted(jax.default_backend())
  batch, time, height, width, channels = normalised.shape
  if v_pitch is not None:
    pitch = aligned_pitch(plane, width)
    if v_pitch != pitch:
      raise ValueError(f"the 'pallas_aligned' kernels store (U, V) = {tuple(plane)} windows of a {width}-wide map in "
                       f"rows of {pitch} entries, not {v_pitch}")
    if tiling.rows not in (None, 1):
      raise ValueError(f"the 'pallas_aligned' kernels take one query row per program, not {tiling.rows}")
    tiling = dataclasses.replace(tiling, rows=1)
  else:
    tiling = dataclasses.replace(tiling, rows=tiling.rows or default_rows(height, width, plane))
  geometry = _Geometry(batch * time, time, height, width, channels, tuple(offsets), tuple(plane), l_major, tiling,
                       v_pitch)
  if max(geometry.windows_size, 2 * geometry.features_size) >= 2**31:
    # The kernels index in int32.
    raise ValueError(f"the 'pallas' STSS indexes at most 2**31 - 1 entries; features {normalised.shape} with "
                     f"{len(offsets)} offsets and a {plane} plane give {geometry.windows_size} similarities: "
                     "use fewer clips per device, or the 'shift' form ('gather' for maps of up to 1024 positions)")
  flat = _windows(normalised.reshape(-1), geometry)
  planes = (plane[0], geometry.pitch)
  if l_major:
    return flat.reshape(batch, time, len(offsets), height, width, *planes)
  return flat.reshape(batch, time, height, width, len(offsets), *planes)


# The aligned kernels' tiles are 16 x 16 (query, column): with 2 forward warps each thread holds
# 4 consecutive window entries, which Triton stores as one 8-byte vector, and with 4 backward warps
# it loads cotangents 2 at a time (8 / 8 warps: one 2-byte access per thread; triton_ptx,
# benchmarks/results/gpu.md session 19). With the first version's 3-D select, 2 / 4 warps ran 3.5x
# faster than 8 / 8 on an H200 (0.100 against 0.353 ms forward). The kept version is not timed yet.
ALIGNED_TILING = Tiling(forward_warps=2, backward_warps=4)

# An aligned program holds one row pair's (width x width) correlation and picks its diagonals
# from it; wider maps belong to the band kernels, which split a row pair's products into tiles.
ALIGNED_MAX_WIDTH = 32


def aligned_pitch(plane: tuple[int, int], width: int) -> int:
  """The row pitch the aligned kernels store (U, V) windows of a `width`-wide map in: V rounded
  up to a power of two of at least 16 entries (whole 32-byte rows in bf16). A ValueError for maps
  wider than ALIGNED_MAX_WIDTH, which the aligned kernels do not take."""
  if width > ALIGNED_MAX_WIDTH:
    raise ValueError(f"the 'pallas_aligned' kernels take maps at most {ALIGNED_MAX_WIDTH} wide, got {width}; "
                     "use 'pallas'")
  return _tile(plane[1])


def _interpret() -> bool:
  return jax.default_backend() != "gpu"


@functools.cache
def _warn_interpreted(backend: str) -> None:
  logging.warning("The 'pallas' STSS runs in Pallas' interpret mode on %s: exact, but slow; "
                  "its kernels compile on GPUs only.", backend)


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
  return jax.lax.dot_general(a, b, (((1,), (contract,)), ((), ())), precision=_precision(dtype),
                             preferred_element_type=_accumulator(dtype))


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
    self.near_ok = (self.near_row < g.neighbour_rows) & (self.near_h >= 0) & (self.near_h < g.height)
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

  def load_row(self, ref, frame, row, ok) -> jax.Array:
    """Row `row` of `frame`: (query_tile, channel_tile), zeros past the width or where not `ok`."""
    g = self.g
    return self._load_rows(ref, (frame * g.height + row) * g.width + jnp.arange(g.query_tile), self.query_ok & ok)

  def window_rows(self, frame, l, row, u) -> jax.Array:
    """Aligned kernels: (query_tile, pitch) flat indices of window row u of offset l of each query
    of row `row` of `frame`."""
    g = self.g
    L, U = len(g.offsets), g.plane[0]
    if g.l_major:
      window = ((frame * L + l) * g.height + row) * g.width + self.col
    else:
      window = ((frame * g.height + row) * g.width + self.col) * L + l
    return (window[:, None] * U + u) * g.pitch + jnp.arange(g.pitch)[None, :]

  def _diagonal(self, v: int) -> jax.Array:
    """(query column, neighbour column): where the neighbour sits at window column v of the
    query's window row."""
    x = jnp.arange(self.g.query_tile)
    return x[None, :] == x[:, None] + (v - self.g.plane[1] // 2)

  def to_windows(self, correlation: jax.Array) -> jax.Array:
    """(query, neighbour column) correlations of one neighbour row -> (query, v) window row, one
    window column (a diagonal of the correlation) at a time, all in two-dimensional tiles. Each
    output picks one entry (or none), so it is exact in any dtype."""
    g = self.g
    column = jnp.arange(g.pitch)[None, :]

    def add_column(v, windows):
      diagonal = jnp.sum(jnp.where(self._diagonal(v), correlation, 0), axis=1).astype(correlation.dtype)
      return jnp.where(column == v, diagonal[:, None], windows)

    # A loop: unrolled over every (offset, row, column), the backward takes minutes to compile.
    return jax.lax.fori_loop(0, g.plane[1], add_column, jnp.zeros((g.query_tile, g.pitch), correlation.dtype))

  def to_correlation(self, windows: jax.Array) -> jax.Array:
    """The transpose of to_windows: (query, v) -> (query, neighbour column)."""
    g = self.g
    column = jnp.arange(g.pitch)[None, :]

    def add_diagonal(v, correlation):
      cells = jnp.sum(jnp.where(column == v, windows, 0), axis=1).astype(windows.dtype)
      return jnp.where(self._diagonal(v), cells[:, None], correlation)

    return jax.lax.fori_loop(0, g.plane[1], add_diagonal, jnp.zeros((g.query_tile, g.query_tile), windows.dtype))

  def window_index(self, frame, l, query_h, query_w, near_h, near_w, ok) -> tuple[jax.Array, jax.Array]:
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
    return self.window_index(frame, l, self.h[:, None], self.col[:, None], self.near_h[None, :],
                             self.near_col[None, :], self.query_ok[:, None] & self.near_ok[None, :] & ok)

  def transposed_pairs(self, frame, l, ok) -> tuple[jax.Array, jax.Array]:
    """window_index with the neighbourhood's positions as queries (columns) of `frame` and the
    band's own positions as their neighbours (rows)."""
    return self.window_index(frame, l, self.near_h[None, :], self.near_col[None, :], self.h[:, None],
                             self.col[:, None], self.query_ok[:, None] & self.near_ok[None, :] & ok)


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
  plt.store(out_ref.at[_store_index(index, ok, g.windows_size)], correlation.astype(out_ref.dtype), mask=ok)


def _aligned_forward_kernel(q_ref, out_ref, *, g: _Geometry):
  # One query row (the band) against each neighbour row u of its window in turn: the row pair's
  # (query, column) correlation becomes the queries' window row u on chip (to_windows), which is
  # stored as (query, pitch) whole rows. Every cell is written, zeros included.
  row = _Band(g)
  l = pl.program_id(2)
  offset = _offset_at(g.offsets, l)
  frame_ok = (row.t + offset >= 0) & (row.t + offset < g.time)
  queries = row.load_band(q_ref, row.frame)
  ok = jnp.broadcast_to(row.query_ok[:, None], (g.query_tile, g.pitch))
  for u in range(g.plane[0]):
    near = row.top + u - g.plane[0] // 2
    neighbours = row.load_row(q_ref, row.frame + offset, near, frame_ok & (near >= 0) & (near < g.height))
    windows = row.to_windows(_matmul(queries, neighbours, True, q_ref.dtype).astype(out_ref.dtype))
    index = row.window_rows(row.frame, l, row.top, u)
    plt.store(out_ref.at[_store_index(index, ok, g.windows_size)], windows, mask=ok)


def _aligned_gradient_part(row: _Band, q_ref, cotangent_ref, as_neighbour: bool) -> jax.Array:
  """_gradient_part for the aligned layout, one (offset, window row) pair at a time: each
  cotangent row is read whole and turned back into a (query, column) correlation on chip."""
  g = row.g
  U = g.plane[0]
  grad = jnp.zeros((g.query_tile, g.channel_tile), _accumulator(q_ref.dtype))
  for l, offset in enumerate(g.offsets):
    shift = -offset if as_neighbour else offset
    other = row.frame + shift
    other_ok = (row.t + shift >= 0) & (row.t + shift < g.time)
    for u in range(U):
      if as_neighbour:  # the queries of `other` whose window row u is this row
        query_row = row.top - u + U // 2
        ok = other_ok & (query_row >= 0) & (query_row < g.height)
        index = row.window_rows(other, l, query_row, u)
      else:
        near = row.top + u - U // 2
        ok = other_ok & (near >= 0) & (near < g.height)
        index = row.window_rows(row.frame, l, row.top, u)
      cotangent = plt.load(cotangent_ref.at[index], mask=(row.query_ok & ok)[:, None], other=0)
      correlation = row.to_correlation(cotangent.astype(q_ref.dtype))  # (query, neighbour column)
      if as_neighbour:
        queries = row.load_row(q_ref, other, query_row, ok)
        grad += jax.lax.dot_general(correlation, queries, (((0,), (0,)), ((), ())), precision=_precision(q_ref.dtype),
                                    preferred_element_type=_accumulator(q_ref.dtype))
      else:
        grad += _matmul(correlation, row.load_row(q_ref, other, near, ok), False, q_ref.dtype)
  return grad


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
  position = (band.frame * g.height + band.top) * g.width + jnp.arange(g.query_tile)  # contiguous rows
  index = position[:, None] * g.channels + band.c[None, :]
  size = g.tiling.backward_parts * g.features_size
  gradient_part = _gradient_part if g.v_pitch is None else _aligned_gradient_part

  def store(grad, part):
    plt.store(grad_ref.at[_store_index(index + part * g.features_size, ok, size)], grad.astype(grad_ref.dtype),
              mask=ok)

  if g.tiling.backward_parts == 1:
    store(gradient_part(band, q_ref, cotangent_ref, False) + gradient_part(band, q_ref, cotangent_ref, True), 0)
    return
  for part in (0, 1):  # 0: as queries, 1: as neighbours

    @pl.when(pl.program_id(2) == part)
    def _(part=part):
      store(gradient_part(band, q_ref, cotangent_ref, as_neighbour=part == 1), part)


def _compiler_params(warps: int):
  return None if _interpret() else plt.CompilerParams(num_warps=warps, num_stages=1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _windows(flat: jax.Array, g: _Geometry) -> jax.Array:
  if g.v_pitch is not None:  # the aligned kernel writes every cell: no zeros to start from
    size = g.windows_size + _trash(g.query_tile * g.pitch)
    windows = pl.pallas_call(
        functools.partial(_aligned_forward_kernel, g=g), out_shape=jax.ShapeDtypeStruct((size,), flat.dtype),
        grid=(g.frames, g.height, len(g.offsets)), interpret=_interpret(),
        compiler_params=_compiler_params(g.tiling.forward_warps), name="stss_windows_aligned")(flat)
    return windows[:g.windows_size] if size > g.windows_size else windows
  size = g.windows_size + _trash(g.query_tile * g.neighbour_tile)
  zeros = jnp.zeros((size,), flat.dtype)
  windows = pl.pallas_call(
      functools.partial(_forward_kernel, g=g), out_shape=jax.ShapeDtypeStruct((size,), flat.dtype),
      grid=(g.frames, g.bands, len(g.offsets)), input_output_aliases={1: 0}, interpret=_interpret(),
      compiler_params=_compiler_params(g.tiling.forward_warps), name="stss_windows")(flat, zeros)
  return windows[:g.windows_size] if size > g.windows_size else windows


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
      grid=(g.frames, g.bands, parts), interpret=_interpret(),
      compiler_params=_compiler_params(g.tiling.backward_warps),
      name="stss_windows_grad" if g.v_pitch is None else "stss_windows_aligned_grad")(
          flat, cotangent.astype(flat.dtype))
  grad = grad[:size].reshape(parts, g.features_size)
  return (grad.sum(axis=0).astype(flat.dtype) if parts > 1 else grad[0],)


_windows.defvjp(_windows_fwd, _windows_bwd)
