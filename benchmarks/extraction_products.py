"""The dense extraction's matrix products alone, as XLA runs them and with their zero blocks skipped.

  python -m benchmarks.extraction_products [--rows=250880] [--forms=dense,row_blocks]   # on a GPU machine

The SELFY block's extraction runs each (1, 3, 3) conv over the flattened (u, v) planes as one
product with a dense matrix (ConvBN.dense). Most of that matrix is zeros: an output row of a 3x3
conv reads at most three input rows. This times, for each of the four layers of the official
extraction (9x9 planes; channels 4, 16, 64, 64; rows padded to the runtime policy's alignment):
- dense: the product with the dense matrix, as the block computes it;
- row_blocks: one product per output row over the columns of the input rows it reads, the
  outputs concatenated. Same result, fewer multiply-adds.

Rows default to the block's planes at batch 32: 32 clips x 8 frames x 5 offsets x 14 x 14. Each
form: forward, and forward + the gradients of the input and the matrix for a fixed cotangent,
median over fresh inputs (bf16). GB/s counts the input read and the output written once; its
ceiling is the copy bandwidth that benchmarks.stss_op prints (4.1 TB/s on an H200). TFLOP/s counts
the multiply-adds the form does. The error is the
largest difference from the dense product over its largest entry.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.timing import time_jax
from stss_jax.layers.conv_bn import aligned_cells, dense_matrix
from stss_jax.layers.selfy import ConvExtraction

ROWS = 32 * 8 * 5 * 14 * 14
FORMS = ("dense", "row_blocks")


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


def row_blocks(plane: tuple[int, int], kernel_shape: tuple[int, ...], strides: tuple[int, int],
               padding: tuple[int, int]) -> list[tuple[int, int, int, int]]:
  """(first, last + 1 input column, first, last + 1 output column) of each output row of a conv
  over flattened (H, W, Cin) planes: the input rows that row's taps reach, within the plane."""
  height, width = plane
  kh, kw, cin, cout = kernel_shape
  out_width = (width + 2 * padding[1] - kw) // strides[1] + 1
  out_height = (height + 2 * padding[0] - kh) // strides[0] + 1
  blocks = []
  for a in range(out_height):
    rows = [r for r in range(a * strides[0] - padding[0], a * strides[0] - padding[0] + kh) if 0 <= r < height]
    blocks.append((rows[0] * width * cin, (rows[-1] + 1) * width * cin,
                   a * out_width * cout, (a + 1) * out_width * cout))
  return blocks


def check_blocks(matrix: np.ndarray, blocks) -> None:
  """Raises if the dense matrix has a nonzero entry outside the blocks (which would then be lost)."""
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


PRODUCTS = {"dense": dense_product, "row_blocks": blocked_product}


def multiply_adds(form: str, matrix: jax.Array, blocks) -> int:
  """Per row."""
  if form == "dense":
    return matrix.shape[0] * matrix.shape[1]
  return sum((k1 - k0) * (n1 - n0) for k0, k1, n0, n1 in blocks)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=ROWS, help=f"planes per product (default {ROWS}: batch 32)")
  parser.add_argument("--forms", default=",".join(FORMS), help=f"comma-separated, of {FORMS}")
  parser.add_argument("--layers", default="conv0,conv1,conv2,conv3", help="comma-separated extraction layers")
  args = parser.parse_args(argv)
  forms = args.forms.split(",")
  unknown = [form for form in forms if form not in PRODUCTS]
  if unknown:
    parser.error(f"--forms: unknown {unknown}; choose from {FORMS}")
  if args.rows < 1:
    parser.error(f"--rows={args.rows}: use at least 1")
  layers = [layer for layer in extraction_layers() if layer[0] in args.layers.split(",")]
  if not layers:
    parser.error(f"--layers={args.layers}: none of conv0, conv1, conv2, conv3")
  device = jax.devices()[0]
  print(f"device: {getattr(device, 'device_kind', device.platform)}; jax {jax.__version__}; {args.rows} rows, bf16")
  print("| layer | K x N | form | multiply-adds (of dense) | forward ms | GB/s | TFLOP/s | fwd+bwd ms | error |\n"
        "|---|---|---|---|---|---|---|---|---|", flush=True)
  rng = np.random.default_rng(0)
  for name, matrix, blocks in layers:
    check_blocks(matrix, blocks)
    k, n = matrix.shape
    inputs = [jnp.asarray(rng.standard_normal((args.rows, k)), jnp.bfloat16) for _ in range(3)]
    cotangent = jnp.asarray(rng.standard_normal((args.rows, n)), jnp.bfloat16)
    reference = np.asarray(dense_product(inputs[0], matrix, blocks), np.float32)
    for form in forms:
      product = PRODUCTS[form]
      forward = jax.jit(lambda a, m, product=product: product(a, m, blocks))

      def loss(a, m, product=product):
        return jnp.sum((product(a, m, blocks) * cotangent).astype(jnp.float32))

      backward = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
      sets = [(a, matrix) for a in inputs]
      error = np.max(np.abs(np.asarray(forward(*sets[0]), np.float32) - reference)) / max(np.max(np.abs(reference)), 1e-30)
      seconds = time_jax(forward, sets)
      macs = multiply_adds(form, matrix, blocks)
      print(f"| {name} | {k} x {n} | {form} | {macs / (k * n):.2f} | {seconds * 1e3:.4f} | "
            f"{args.rows * (k + n) * 2 / seconds / 1e9:.0f} | {2 * args.rows * macs / seconds / 1e12:.1f} | "
            f"{time_jax(backward, sets) * 1e3:.4f} | {error:.1e} |", flush=True)


if __name__ == "__main__":
  main()
