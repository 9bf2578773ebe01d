"""The dense extraction's matrix products alone, as XLA runs them and with their zero blocks
skipped.

  python -m benchmarks.extraction_products [--rows=250880]
  [--forms=dense,row_blocks,mosaic_row_blocks,...]

The SELFY block's extraction runs each (1, 3, 3) conv over the flattened (u, v) planes as one
product with a dense matrix (ConvBN.dense). Most of that matrix is zeros: an output row of a 3x3
conv reads at most three input rows. This times, for each of the four layers of the official
extraction (9x9 planes; channels 4, 16, 64, 64; rows padded to the runtime policy's alignment):
- dense: the product with the dense matrix, as the block computes it;
- row_blocks: one product per output row over the columns of the input rows it reads, the
  outputs concatenated. Same result, fewer multiply-adds; XLA copies the slices.
- mosaic_row_blocks: the same blocks in one Mosaic GPU kernel (Hopper: TMA loads, wgmma), which
  reads each block's columns in place. One program per 64 or 128 rows, one pipeline per block.
  Forward only. Output blocks must be whole multiples of 8 entries (not conv0's 36-entry rows).
  Elsewhere than on a GPU it runs in Mosaic GPU's interpret mode, for at most INTERPRET_ROWS rows
  (tests).
- mosaic_persistent_row_blocks: the same blocks in a persistent, warp-specialised Mosaic GPU
  kernel: one program per SM, a memory warpgroup that streams every block of a tile through one
  pipeline, two compute warpgroups. Forward only, GPUs only (the interpreter cannot run it; the
  tests lower it for CUDA on the CPU).

Rows default to the block's planes at batch 32: 32 clips x 8 frames x 5 offsets x 14 x 14. Each
form: forward, and forward + the gradients of the input and the matrix for a fixed cotangent,
median over fresh inputs (bf16). mosaic_row_blocks is timed for each setting of
--mosaic_tile_rows, --mosaic_steps and --mosaic_products_in_flight; mosaic_persistent_row_blocks
for each of --mosaic_steps, --mosaic_tile_k, --mosaic_out_slots and --mosaic_warpgroup_rows.
GB/s counts the input read and the output written once; its ceiling is the copy bandwidth that
benchmarks.stss_op prints (4.1 TB/s on an H200). TFLOP/s counts the multiply-adds the form does.
The error is the largest difference from the dense product over its largest entry.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from benchmarks.timing import time_jax
from stss_jax.layers.conv_bn import aligned_cells, dense_matrix
from stss_jax.layers.selfy import ConvExtraction

ROWS = 32 * 8 * 5 * 14 * 14
FORMS = ("dense", "row_blocks", "mosaic_row_blocks", "mosaic_persistent_row_blocks")
INTERPRET_ROWS = 1024
HOPPER_SMS = 132  # H100 SXM and H200
MOSAIC_TILE_ROWS = (64, 128)  # rows per program: one or two wgmma tiles of 64 rows, one warpgroup


def extraction_layers(window=(5, 9, 9), channels=(4, 16, 64, 64), seed: int = 0):
  """[(name, matrix, blocks)] of the official extraction's four layers, each matrix built from a
  random kernel by ConvBN.dense's dense_matrix, with the row blocks (row_blocks) of its conv."""
  extraction = ConvExtraction(window, channels, dense=True, dtype=jnp.bfloat16, rngs=nnx.Rngs(seed))
  plane = tuple(window[1:])
  entries = aligned_cells(plane[0] * plane[1], 1)
  layers = []
  for name in ("conv0", "conv1", "conv2", "conv3"):
    conv = getattr(extraction, name).conv
    kernel = conv.kernel[...].astype(jnp.bfloat16)
    strides = conv.strides
    padding = tuple(low for low, _ in conv.padding)
    matrix, out_plane, _ = dense_matrix(kernel, plane, entries, strides, padding)
    layers.append((name, matrix, row_blocks(plane, kernel.shape, strides, padding)))
    plane, entries = out_plane, matrix.shape[1]
  return layers


def row_blocks(
  plane: tuple[int, int],
  kernel_shape: tuple[int, ...],
  strides: tuple[int, int],
  padding: tuple[int, int],
) -> list[tuple[int, int, int, int]]:
  """(first, last + 1 input column, first, last + 1 output column) of each output row of a conv
  over flattened (H, W, Cin) planes: the input rows that row's taps reach, within the plane."""
  height, width = plane
  kh, kw, cin, cout = kernel_shape
  out_width = (width + 2 * padding[1] - kw) // strides[1] + 1
  out_height = (height + 2 * padding[0] - kh) // strides[0] + 1
  blocks = []
  for a in range(out_height):
    rows = [
      r
      for r in range(a * strides[0] - padding[0], a * strides[0] - padding[0] + kh)
      if 0 <= r < height
    ]
    blocks.append(
      (
        rows[0] * width * cin,
        (rows[-1] + 1) * width * cin,
        a * out_width * cout,
        (a + 1) * out_width * cout,
      )
    )
  return blocks


def check_blocks(matrix: np.ndarray, blocks) -> None:
  """Raises if the dense matrix has a nonzero entry outside the blocks (which would then be
  lost)."""
  outside = np.array(matrix, np.float32)
  for k0, k1, n0, n1 in blocks:
    outside[k0:k1, n0:n1] = 0
  if outside.any():
    k, n = np.argwhere(outside)[0]
    raise ValueError(f"the dense matrix has a nonzero entry at ({k}, {n}), outside every row block")


def dense_product(a: jax.Array, matrix: jax.Array, blocks) -> jax.Array:
  del blocks
  return a @ matrix


def blocked_product(a: jax.Array, matrix: jax.Array, blocks) -> jax.Array:
  """a @ matrix from the blocks alone; columns past the last block (alignment padding) are zeros."""
  parts = [a[:, k0:k1] @ matrix[k0:k1, n0:n1] for k0, k1, n0, n1 in blocks]
  padding = matrix.shape[1] - blocks[-1][3]
  if padding:
    parts.append(jnp.zeros((a.shape[0], padding), parts[0].dtype))
  return jnp.concatenate(parts, axis=1)


def mosaic_tile_k(k_total: int, blocks) -> int:
  """Columns per pipeline step: the largest multiple of 16 up to 128 that divides K and every
  block bound (whole steps, no zeros read), else 16 with the blocks widened to whole steps."""
  bounds = [k_total] + [bound for k0, k1, _, _ in blocks for bound in (k0, k1)]
  exact = [t for t in range(128, 15, -16) if all(bound % t == 0 for bound in bounds)]
  return exact[0] if exact else 16


def widened_blocks(blocks, tile_k: int):
  """The blocks with their input columns widened to whole steps of tile_k (the matrix is zero in
  the added rows, so the product is unchanged)."""
  return [(k0 // tile_k * tile_k, -(-k1 // tile_k) * tile_k, n0, n1) for k0, k1, n0, n1 in blocks]


def _refuse_unwritten_columns(form: str, blocks, n_total: int) -> None:
  """The mosaic kernels write only their blocks' columns: a matrix with columns past the last block
  (alignment padding) would leave them unwritten."""
  if blocks[-1][3] != n_total:
    raise ValueError(
      f"{form} writes only its blocks' columns: the matrix's last {n_total - blocks[-1][3]} "
      "(alignment padding) would be left unwritten; use a row alignment that pads none"
    )


def mosaic_blocked_product(
  a: jax.Array,
  matrix: jax.Array,
  blocks,
  tile_rows: int = 64,
  steps: int = 2,
  products_in_flight: int = 0,
  interpret=None,
) -> jax.Array:
  """blocked_product as one Mosaic GPU kernel: each program takes tile_rows rows and, for each
  block, streams the block's input columns and matrix rows through shared memory (TMA, `steps` in
  flight) into a wgmma accumulator, then stores the block's output columns. More rows per program
  read each matrix block fewer times, and hold a larger accumulator in registers. With
  products_in_flight = 1 a step leaves its product running while the next one is issued, and its
  shared-memory slots are released one step later."""
  rows, k_total = a.shape
  n_total = matrix.shape[1]
  widths = sorted({n1 - n0 for _, _, n0, n1 in blocks})
  if any(width % 8 for width in widths):
    raise ValueError(
      f"output rows of {widths[0]} entries: not a wgmma width; mosaic_row_blocks needs output "
      f"blocks of whole multiples of 8 entries, got {widths}"
    )
  _refuse_unwritten_columns("mosaic_row_blocks", blocks, n_total)
  if tile_rows not in MOSAIC_TILE_ROWS:
    raise ValueError(
      f"mosaic_row_blocks takes {MOSAIC_TILE_ROWS} rows per program, got {tile_rows}"
    )
  if steps < 1 or products_in_flight not in (0, 1) or products_in_flight >= steps:
    raise ValueError(
      f"mosaic_row_blocks needs 1 or more steps in flight and 0 or 1 products in flight, fewer "
      f"than the steps; got {steps} and {products_in_flight}"
    )
  tile_m = tile_rows
  tile_k = mosaic_tile_k(k_total, blocks)
  widened = widened_blocks(blocks, tile_k)
  padded_rows = -(-rows // tile_m) * tile_m
  a = jnp.pad(a, ((0, padded_rows - rows), (0, 0)))
  in_transforms = _swizzled(tile_k, a.dtype)

  def kernel(a_gmem, m_gmem, out_gmem):
    rows_here = pl.ds(lax.axis_index("rows") * tile_m, tile_m)
    for k0, k1, n0, n1 in widened:
      width = n1 - n0

      def with_output(out_smem, k0=k0, k1=k1, n0=n0, width=width):
        def with_accumulator(acc_ref):
          def step(_, a_smem, m_smem):
            plgpu.wgmma(acc_ref, a_smem, m_smem)
            plgpu.wgmma_wait(products_in_flight)

          plgpu.emit_pipeline(
            step,
            grid=((k1 - k0) // tile_k,),
            in_specs=[
              plgpu.BlockSpec(
                (tile_m, tile_k),
                lambda k: (0, k),
                transforms=in_transforms,
                delay_release=products_in_flight,
              ),
              plgpu.BlockSpec(
                (tile_k, width),
                lambda k: (k, 0),
                transforms=in_transforms,
                delay_release=products_in_flight,
              ),
            ],
            max_concurrent_steps=steps,
          )(
            a_gmem.at[rows_here, pl.ds(k0, k1 - k0)],
            m_gmem.at[pl.ds(k0, k1 - k0), pl.ds(n0, width)],
          )
          return acc_ref[...]

        # The interpreter (and the allocator) take register and shared-memory scopes apart.
        accumulated = pl.run_scoped(with_accumulator, plgpu.ACC((tile_m, width), jnp.float32))
        out_smem[...] = accumulated.astype(out_smem.dtype)
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(out_smem, out_gmem.at[rows_here, pl.ds(n0, width)])
        plgpu.wait_smem_to_gmem(0)

      pl.run_scoped(
        with_output, plgpu.SMEM((tile_m, width), a.dtype, transforms=_swizzled(width, a.dtype))
      )

  out = plgpu.kernel(
    kernel,
    out_type=jax.ShapeDtypeStruct((padded_rows, n_total), a.dtype),
    grid=(padded_rows // tile_m,),
    grid_names=("rows",),
    interpret=interpret,
  )(a, matrix)
  return out[:rows]


def mosaic_persistent_blocked_product(
  a: jax.Array,
  matrix: jax.Array,
  blocks,
  steps: int = 2,
  tile_k: int | None = None,
  out_slots: int = 2,
  warpgroup_rows: int = 64,
) -> jax.Array:
  """blocked_product as one persistent, warp-specialised Mosaic GPU kernel. One program per SM
  loops over tiles of 2 x warpgroup_rows rows. For each tile one pipeline streams every block's
  input columns and matrix rows in turn: a memory warpgroup issues the TMA loads, `steps` ahead, so
  the loads of the next block overlap the products of this one. Two compute warpgroups take
  warpgroup_rows (64 or 128) rows each. Each carries its (warpgroup_rows, width) float32
  accumulator from step to step, clears it at a block's first step, and at its last stores the
  block's output columns through shared memory.
  - 128 rows per warpgroup read each matrix block from L2 half as often as 64, and hold twice the
    registers.
  - Two out_slots let one store drain while the next block runs; one leaves room for more steps.
  - tile_k columns per step: default mosaic_tile_k; a multiple of 16 that divides K, the blocks
    widened to it.
  The blocks must have one width, side by side (the extraction's: one per output row)."""
  rows, k_total = a.shape
  n_total = matrix.shape[1]
  if warpgroup_rows not in (64, 128):
    raise ValueError(
      f"mosaic_persistent_row_blocks takes 64 or 128 rows per warpgroup, got {warpgroup_rows}"
    )
  tile_m, warpgroups = warpgroup_rows, 2
  cta_rows = tile_m * warpgroups
  widths = sorted({n1 - n0 for _, _, n0, n1 in blocks})
  if (
    len(widths) != 1
    or widths[0] % 8
    or any(n0 != b * widths[0] for b, (_, _, n0, _) in enumerate(blocks))
  ):
    raise ValueError(
      f"mosaic_persistent_row_blocks needs blocks of one width, a multiple of 8, side by side "
      f"from column 0; got widths {widths}"
    )
  _refuse_unwritten_columns("mosaic_persistent_row_blocks", blocks, n_total)
  if steps < 2 or out_slots not in (1, 2):
    raise ValueError(
      f"mosaic_persistent_row_blocks needs 2 or more steps in flight and 1 or 2 output slots, got "
      f"{steps} and {out_slots}"
    )
  tile_k = tile_k or mosaic_tile_k(k_total, blocks)
  if tile_k % 16 or k_total % tile_k:
    raise ValueError(
      "mosaic_persistent_row_blocks takes steps of a multiple of 16 columns that divides "
      f"K={k_total}, "
      f"got {tile_k}"
    )
  width = widths[0]
  widened = widened_blocks(blocks, tile_k)
  num_steps, block_of, chunk, first_of_block, last_of_block = step_schedule(widened, tile_k)
  padded_rows = -(-rows // cta_rows) * cta_rows
  a = jnp.pad(a, ((0, padded_rows - rows), (0, 0)))
  in_transforms = _swizzled(tile_k, a.dtype)

  def kernel(a_gmem, m_gmem, out_gmem):
    wg = lax.axis_index("wg")

    def pipeline_for(body, compute_context):
      return plgpu.emit_pipeline_warp_specialized(
        body,
        grid=(num_steps,),
        memory_registers=40,
        wg_axis="wg",
        num_compute_wgs=warpgroups,
        max_concurrent_steps=steps,
        compute_context=compute_context,
        in_specs=[
          plgpu.BlockSpec((cta_rows, tile_k), lambda s: (0, chunk(s)), transforms=in_transforms),
          plgpu.BlockSpec(
            (tile_k, width), lambda s: (chunk(s), block_of(s)), transforms=in_transforms
          ),
        ],
      )

    def ignore(*_, **__):
      return None

    @functools.partial(
      pl.run_scoped,
      allocations=pipeline_for(ignore, ignore).get_allocations(a_gmem, m_gmem),
      out_smem=plgpu.SMEM(
        (out_slots, warpgroups, tile_m, width), a.dtype, transforms=_swizzled(width, a.dtype)
      ),
      collective_axes="wg",
    )
    def _scope(allocations, out_smem):
      @plgpu.nd_loop((padded_rows // cta_rows,), collective_axes="sm")
      def _tiles(loop):
        (tile,) = loop.index
        cta_slice = pl.ds(tile * cta_rows, cta_rows)

        def body(indices, a_smem, m_smem, acc):
          (step,) = indices
          block = block_of(step)
          acc = jnp.where(
            jnp.broadcast_to(first_of_block(step), acc.shape), jnp.zeros_like(acc), acc
          )

          def product(acc_ref):
            plgpu.wgmma(acc_ref, a_smem.at[pl.ds(wg * tile_m, tile_m)], m_smem)

          acc = pl.run_state(product)(plgpu.ACC.init(acc))

          @pl.when(last_of_block(step))
          def _store():
            slot = lax.rem(loop.local_index * len(blocks) + block, out_slots)
            plgpu.wait_smem_to_gmem(out_slots - 1, wait_read_only=True)
            out_smem[slot, wg] = acc.astype(out_smem.dtype)
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(
              out_smem.at[slot, wg],
              out_gmem.at[
                pl.ds(tile * cta_rows + wg * tile_m, tile_m), pl.ds(block * width, width)
              ],
            )

          return acc

        def compute_context(run):
          run(plgpu.layout_cast(jnp.zeros((tile_m, width), jnp.float32), plgpu.Layout.WGMMA))

        pipeline_for(body, compute_context)(a_gmem.at[cta_slice], m_gmem, allocations=allocations)

    plgpu.wait_smem_to_gmem(0, wait_read_only=True)

  sms = (
    jax.devices()[0].core_count if jax.default_backend() == "gpu" else HOPPER_SMS
  )  # CPU: lowering only
  out = plgpu.kernel(
    kernel,
    out_type=jax.ShapeDtypeStruct((padded_rows, n_total), a.dtype),
    grid=(sms,),
    grid_names=("sm",),
    num_threads=warpgroups + 1,
    thread_name="wg",
    compiler_params=plgpu.CompilerParams(lowering_semantics=plgpu.LoweringSemantics.Warpgroup),
  )(a, matrix)
  return out[:rows]


def step_schedule(blocks, tile_k: int):
  """(steps, block_of, chunk, first_of_block, last_of_block) of one pipeline over all the blocks
  in turn, each block's input columns (whole steps of tile_k) one chunk per step. The four are
  functions of the traced step index, built from comparisons and selects (a kernel holds no
  tables): the step's block, the input chunk it reads (in tile_k columns), and whether it is its
  block's first or last step."""
  counts = [(k1 - k0) // tile_k for k0, k1, _, _ in blocks]
  starts = list(
    itertools.accumulate(counts, initial=0)
  )  # block b: steps starts[b] .. starts[b + 1] - 1
  offsets = [k0 // tile_k - start for (k0, _, _, _), start in zip(blocks, starts)]

  def block_of(step):
    block = jnp.int32(0)
    for start in starts[1:-1]:
      block = block + (step >= start).astype(jnp.int32)
    return block

  def chunk(step):
    block = block_of(step)
    offset = jnp.int32(offsets[0])
    for b, value in enumerate(offsets[1:], 1):
      offset = jnp.where(block == b, jnp.int32(value), offset)
    return step + offset

  def first_of_block(step):
    return functools.reduce(jnp.logical_or, [step == start for start in starts[:-1]])

  def last_of_block(step):
    return functools.reduce(jnp.logical_or, [step == end - 1 for end in starts[1:]])

  return starts[-1], block_of, chunk, first_of_block, last_of_block


def _swizzled(minor_entries: int, dtype) -> tuple:
  """Shared-memory transforms for tiles whose minor dimension holds minor_entries."""
  swizzle = plgpu.find_swizzle(minor_entries * jnp.dtype(dtype).itemsize * 8)
  return plgpu.TilingTransform((8, swizzle // jnp.dtype(dtype).itemsize)), plgpu.SwizzleTransform(
    swizzle
  )


def mosaic_interpret_params():
  """None on GPUs; elsewhere Mosaic GPU's interpret mode (a private jax class: named here, so that
  a jax that moves it fails with this message rather than deep in a trace)."""
  if jax.default_backend() == "gpu":
    return None
  try:
    from jax._src.pallas.mosaic_gpu.interpret.params import InterpretGPUParams
  except ImportError as e:
    raise RuntimeError(
      f"mosaic_row_blocks off a GPU needs Mosaic GPU's interpret mode, not in jax "
      f"{jax.__version__}: {e}"
    ) from e
  return InterpretGPUParams()


PRODUCTS = {
  "dense": dense_product,
  "row_blocks": blocked_product,
  "mosaic_row_blocks": mosaic_blocked_product,
  "mosaic_persistent_row_blocks": mosaic_persistent_blocked_product,
}


@dataclasses.dataclass(frozen=True)
class Variant:
  """One timed row: a form with its settings. tile_k: columns per pipeline step, None for
  mosaic_tile_k's. Only the XLA forms have gradients."""

  form: str
  label: str
  product: Callable
  tile_k: int | None = None


def _variants(
  forms, tile_rows, steps, products_in_flight, persistent=((0, 2, 64),)
) -> list[Variant]:
  """Each form, the mosaic ones once per setting; persistent holds (tile_k, output slots,
  warpgroup rows) settings, tile_k 0 for mosaic_tile_k's."""
  variants = []
  for form in forms:
    if form == "mosaic_persistent_row_blocks":
      for in_flight, (tile_k, slots, rows) in itertools.product(steps, persistent):
        product = functools.partial(
          mosaic_persistent_blocked_product,
          steps=in_flight,
          tile_k=tile_k or None,
          out_slots=slots,
          warpgroup_rows=rows,
        )
        if jax.default_backend() != "gpu":
          product = _gpu_only
        columns = tile_k or "auto"
        variants.append(
          Variant(
            form,
            f"{form} ({in_flight} steps of {columns} columns in flight, {slots} output "
            f"slots, {rows} rows per warpgroup)",
            product,
            tile_k or None,
          )
        )
      continue
    if form != "mosaic_row_blocks":
      variants.append(Variant(form, form, PRODUCTS[form]))
      continue
    for rows, in_flight, products in itertools.product(tile_rows, steps, products_in_flight):
      if products >= in_flight:
        continue
      product = functools.partial(
        mosaic_blocked_product,
        tile_rows=rows,
        steps=in_flight,
        products_in_flight=products,
        interpret=mosaic_interpret_params(),
      )
      variants.append(
        Variant(
          form, f"{form} ({rows} rows, {in_flight} steps, {products} products in flight)", product
        )
      )
  return variants


def _gpu_only(*_, **__):
  raise RuntimeError("runs on GPUs only: Mosaic GPU's interpret mode has no pl.run_state")


def multiply_adds(form: str, matrix: jax.Array, blocks, tile_k: int | None = None) -> int:
  """Per row (the mosaic forms: their blocks widened to whole pipeline steps of tile_k columns,
  by default mosaic_tile_k's)."""
  if form.startswith("mosaic"):
    blocks = widened_blocks(blocks, tile_k or mosaic_tile_k(matrix.shape[0], blocks))
  if form == "dense":
    return matrix.shape[0] * matrix.shape[1]
  return sum((k1 - k0) * (n1 - n0) for k0, k1, n0, n1 in blocks)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--rows", type=int, default=ROWS, help=f"planes per product (default {ROWS}: batch 32)"
  )
  parser.add_argument("--forms", default=",".join(FORMS), help=f"comma-separated, of {FORMS}")
  parser.add_argument(
    "--layers", default="conv0,conv1,conv2,conv3", help="comma-separated extraction layers"
  )
  parser.add_argument(
    "--mosaic_tile_rows",
    default="64",
    help=f"comma-separated rows per mosaic program, of "
    f"{MOSAIC_TILE_ROWS}; each setting is a row of its own",
  )
  parser.add_argument(
    "--mosaic_steps",
    default="2",
    help="comma-separated pipeline steps in flight (TMA copies ahead of the products)",
  )
  parser.add_argument(
    "--mosaic_products_in_flight",
    default="0",
    help="comma-separated, of 0 and 1: products "
    "left running while the next step's is issued (settings with as many steps are skipped)",
  )
  parser.add_argument(
    "--mosaic_tile_k",
    default="0",
    help="comma-separated columns per step of the persistent "
    "form (multiples of 16 that divide K; 0: the largest that divides every block bound)",
  )
  parser.add_argument(
    "--mosaic_out_slots",
    default="2",
    help="comma-separated, of 1 and 2: the persistent form's output staging slots per warpgroup",
  )
  parser.add_argument(
    "--mosaic_warpgroup_rows",
    default="64",
    help="comma-separated, of 64 and 128: rows per "
    "compute warpgroup of the persistent form (two warpgroups per program)",
  )
  args = parser.parse_args(argv)
  forms = args.forms.split(",")
  unknown = [form for form in forms if form not in PRODUCTS]
  if unknown:
    parser.error(f"--forms: unknown {unknown}; choose from {FORMS}")
  if args.rows < 1:
    parser.error(f"--rows={args.rows}: use at least 1")
  try:
    tile_rows = [int(value) for value in args.mosaic_tile_rows.split(",")]
    steps = [int(value) for value in args.mosaic_steps.split(",")]
    products_in_flight = [int(value) for value in args.mosaic_products_in_flight.split(",")]
    persistent = list(
      itertools.product(
        *(
          [int(value) for value in flag.split(",")]
          for flag in (args.mosaic_tile_k, args.mosaic_out_slots, args.mosaic_warpgroup_rows)
        )
      )
    )
  except ValueError:
    parser.error(
      f"--mosaic_tile_rows={args.mosaic_tile_rows} / --mosaic_steps={args.mosaic_steps} / "
      f"--mosaic_products_in_flight={args.mosaic_products_in_flight} / "
      f"--mosaic_tile_k={args.mosaic_tile_k} / "
      f"--mosaic_out_slots={args.mosaic_out_slots} / "
      f"--mosaic_warpgroup_rows={args.mosaic_warpgroup_rows}: "
      "whole numbers"
    )
  if (
    any(rows not in MOSAIC_TILE_ROWS for rows in tile_rows)
    or any(step < 1 for step in steps)
    or any(products not in (0, 1) for products in products_in_flight)
  ):
    parser.error(
      f"--mosaic_tile_rows takes {MOSAIC_TILE_ROWS}, --mosaic_steps 1 or more, "
      f"--mosaic_products_in_flight 0 or 1; got {args.mosaic_tile_rows} / {args.mosaic_steps} / "
      f"{args.mosaic_products_in_flight}"
    )
  if any(
    tile_k < 0 or tile_k % 16 or slots not in (1, 2) or rows not in (64, 128)
    for tile_k, slots, rows in persistent
  ):
    parser.error(
      "--mosaic_tile_k takes 0 or multiples of 16, --mosaic_out_slots 1 or 2, "
      "--mosaic_warpgroup_rows "
      f"64 or 128; got {args.mosaic_tile_k} / {args.mosaic_out_slots} / "
      f"{args.mosaic_warpgroup_rows}"
    )
  layers = [layer for layer in extraction_layers() if layer[0] in args.layers.split(",")]
  if not layers:
    parser.error(f"--layers={args.layers}: none of conv0, conv1, conv2, conv3")
  if "mosaic_row_blocks" in forms and jax.default_backend() != "gpu" and args.rows > INTERPRET_ROWS:
    parser.error(
      f"--forms=mosaic_row_blocks off a GPU runs in interpret mode: use --rows={INTERPRET_ROWS} or "
      "fewer"
    )
  device = jax.devices()[0]
  print(
    f"device: {getattr(device, 'device_kind', device.platform)}; jax {jax.__version__}; "
    f"{args.rows} rows, bf16"
  )
  print(
    "| layer | K x N | form | multiply-adds (of dense) | forward ms | GB/s | TFLOP/s | fwd+bwd ms "
    "| error |\n"
    "|---|---|---|---|---|---|---|---|---|",
    flush=True,
  )
  variants = _variants(forms, tile_rows, steps, products_in_flight, persistent)
  rng = np.random.default_rng(0)
  for name, matrix, blocks in layers:
    check_blocks(matrix, blocks)
    k, n = matrix.shape
    inputs = [jnp.asarray(rng.standard_normal((args.rows, k)), jnp.bfloat16) for _ in range(3)]
    cotangent = jnp.asarray(rng.standard_normal((args.rows, n)), jnp.bfloat16)
    reference = np.asarray(dense_product(inputs[0], matrix, blocks), np.float32)
    sets = [(a, matrix) for a in inputs]
    for variant in variants:
      row = f"| {name} | {k} x {n} | {variant.label} |"
      forward = jax.jit(functools.partial(variant.product, blocks=blocks))
      try:
        error = np.max(np.abs(np.asarray(forward(*sets[0]), np.float32) - reference)) / max(
          np.max(np.abs(reference)), 1e-30
        )
      except Exception as e:  # a layer or setting the kernel or compiler refuses: say so, go on
        print(
          f"{row} - | failed: {type(e).__name__}: {str(e).splitlines()[0][:160]} | | | | |",
          flush=True,
        )
        continue
      seconds = time_jax(forward, sets)
      macs = multiply_adds(variant.form, matrix, blocks, variant.tile_k)
      both = "-"  # the mosaic kernels have no gradient
      if not variant.form.startswith("mosaic"):

        def loss(a, m, product=variant.product):
          return jnp.sum((product(a, m, blocks) * cotangent).astype(jnp.float32))  # noqa: B023, B023

        both = f"{time_jax(jax.jit(jax.value_and_grad(loss, argnums=(0, 1))), sets) * 1e3:.4f}"
      print(
        f"{row} {macs / (k * n):.2f} | {seconds * 1e3:.4f} | "
        f"{args.rows * (k + n) * 2 / seconds / 1e9:.0f} | "
        f"{2 * args.rows * macs / seconds / 1e12:.1f} | {both} | {error:.1e} |",
        flush=True,
      )


if __name__ == "__main__":
  main()
