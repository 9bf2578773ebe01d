"""benchmarks.extraction_products: its row blocks hold every nonzero of the extraction's dense
matrices, and the blocked products (XLA's and the Mosaic GPU kernel's, interpreted) are the dense
product (float64 numpy is the reference)."""

import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import extraction_products
from benchmarks.extraction_products import (
  blocked_product,
  check_blocks,
  extraction_layers,
  mosaic_blocked_product,
  mosaic_interpret_params,
  mosaic_tile_k,
  row_blocks,
  widened_blocks,
)


def test_row_blocks_give_the_dense_product_for_every_extraction_layer():
  rng = np.random.default_rng(0)
  layers = extraction_layers()
  assert [name for name, _, _ in layers] == ["conv0", "conv1", "conv2", "conv3"]
  for name, matrix, blocks in layers:
    check_blocks(matrix, blocks)
    a = jnp.asarray(rng.standard_normal((5, matrix.shape[0])), jnp.float32)
    want = np.asarray(a, np.float64) @ np.asarray(matrix, np.float64)
    got = np.asarray(blocked_product(a, matrix.astype(jnp.float32), blocks), np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)


def test_row_blocks_of_the_official_planes():
  # conv1: 9x9x4 -> 5x5x16, stride 2, padding 1. Output row 0 reads input rows 0-1, rows 1-3
  # read three rows each (2a - 1 .. 2a + 1), row 4 reads rows 7-8.
  assert row_blocks((9, 9), (3, 3, 4, 16), (2, 2), (1, 1)) == [
    (0, 72, 0, 80),
    (36, 144, 80, 160),
    (108, 216, 160, 240),
    (180, 288, 240, 320),
    (252, 324, 320, 400),
  ]
  # conv3: 3x3x64 -> 1x1x64, no padding: one block, the whole plane.
  assert row_blocks((3, 3), (3, 3, 64, 64), (1, 1), (0, 0)) == [(0, 576, 0, 64)]


def test_a_dense_entry_outside_the_blocks_is_refused():
  _, matrix, blocks = extraction_layers()[1]
  with pytest.raises(ValueError, match="outside every row block"):
    check_blocks(matrix, blocks[:-1])


def test_main_prints_every_layer_and_form(monkeypatch, capsys):
  monkeypatch.setattr(extraction_products, "time_jax", lambda fn, sets, **_: 1e-3)
  extraction_products.main(["--rows=16"])
  rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| conv")]
  assert len(rows) == 16
  for line in rows:
    if "| mosaic_persistent_row_blocks (2 steps of auto columns in flight" in line:
      assert "failed: RuntimeError: runs on GPUs only" in line  # no interpret mode for it
      continue
    if line.startswith(
      "| conv0 | 96 x 336 | mosaic_row_blocks (64 rows, 2 steps, 0 products in flight) |"
    ):
      assert "output rows of 36 entries: not a wgmma width" in line
      continue
    error = float(line.rstrip(" |").split("|")[-1])
    assert error < 1e-2, line
    # fwd+bwd column: timed for the XLA forms (1 ms each, the stub's), "-" for the kernels
    assert line.split("|")[-3].strip() == ("-" if "mosaic" in line else "1.0000"), line


def test_the_mosaic_kernel_gives_the_dense_product_in_interpret_mode():
  """The Mosaic GPU kernel, run by Mosaic GPU's interpreter on the CPU: every layer it takes, rows
  that do not fill its last 64-row tile included."""
  rng = np.random.default_rng(1)
  settings = [(64, 2, 0), (128, 3, 1), (64, 2, 1)]  # rows per program, steps, products in flight
  for (name, matrix, blocks), (tile_rows, steps, products) in zip(
    extraction_layers()[1:], settings
  ):
    a = jnp.asarray(rng.standard_normal((70, matrix.shape[0])), jnp.bfloat16)
    want = np.asarray(a, np.float64) @ np.asarray(matrix, np.float64)
    got = np.asarray(
      mosaic_blocked_product(
        a, matrix, blocks, tile_rows, steps, products, interpret=mosaic_interpret_params()
      ),
      np.float64,
    )
    assert got.shape == want.shape, name
    # bf16 output: one rounding of each entry
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2 * np.max(np.abs(want)), err_msg=name)


def test_mosaic_steps_divide_the_blocks_where_they_can():
  layers = {name: (matrix, blocks) for name, matrix, blocks in extraction_layers()}
  assert (
    mosaic_tile_k(layers["conv2"][0].shape[0], layers["conv2"][1]) == 80
  )  # bounds 0, 80, 160, 240, 320, 400
  assert (
    mosaic_tile_k(layers["conv3"][0].shape[0], layers["conv3"][1]) == 96
  )  # one block, K = 576 = 6 x 96
  assert (
    mosaic_tile_k(layers["conv1"][0].shape[0], layers["conv1"][1]) == 16
  )  # bounds at multiples of 36
  matrix, blocks = layers["conv1"]
  check_blocks(matrix, widened_blocks(blocks, 16))


def test_the_mosaic_kernel_refuses_output_rows_it_cannot_tile():
  _, matrix, blocks = extraction_layers()[0]
  with pytest.raises(ValueError, match=r"whole multiples of 8 entries, got \[36\]"):
    mosaic_blocked_product(jnp.zeros((64, matrix.shape[0]), jnp.bfloat16), matrix, blocks)
  _, matrix, blocks = extraction_layers()[2]
  with pytest.raises(ValueError, match=r"takes \(64, 128\) rows per program, got 96"):
    mosaic_blocked_product(
      jnp.zeros((64, matrix.shape[0]), jnp.bfloat16), matrix, blocks, tile_rows=96
    )
  with pytest.raises(
    ValueError, match="the matrix's last 16 \\(alignment padding\\) would be left unwritten"
  ):
    mosaic_blocked_product(
      jnp.zeros((64, matrix.shape[0]), jnp.bfloat16), jnp.pad(matrix, ((0, 0), (0, 16))), blocks
    )
  with pytest.raises(ValueError, match="fewer than the steps; got 1 and 1"):
    mosaic_blocked_product(
      jnp.zeros((64, matrix.shape[0]), jnp.bfloat16), matrix, blocks, steps=1, products_in_flight=1
    )


@pytest.mark.parametrize(
  "argv,message",
  [
    (["--forms=sparse"], "--forms: unknown ['sparse']"),
    (["--rows=0"], "--rows=0: use at least 1"),
    (["--layers=conv9"], "--layers=conv9: none of conv0"),
    (["--forms=mosaic_row_blocks"], "off a GPU runs in interpret mode: use --rows=1024 or fewer"),
    (
      ["--mosaic_tile_rows=96"],
      "--mosaic_steps 1 or more, --mosaic_products_in_flight 0 or 1; got 96 / 2 / 0",
    ),
    (["--mosaic_products_in_flight=2"], "got 64 / 2 / 2"),
    (["--mosaic_steps=two"], "whole numbers"),
    (
      ["--mosaic_tile_k=24"],
      "--mosaic_tile_k takes 0 or multiples of 16, --mosaic_out_slots 1 or 2, "
      "--mosaic_warpgroup_rows 64 or 128; got 24 / 2 / 64",
    ),
    (["--mosaic_warpgroup_rows=256"], "got 0 / 2 / 256"),
    (["--mosaic_out_slots=x"], "--mosaic_out_slots=x"),
  ],
)
def test_bad_arguments_are_named(argv, message, capsys):
  with pytest.raises(SystemExit):
    extraction_products.main(argv)
  assert message in capsys.readouterr().err


def test_the_mosaic_kernel_lowers_for_hopper_without_a_gpu():
  """Lowered for CUDA on the CPU machine, at the block's 250,880 rows: Mosaic GPU checks tile
  shapes, swizzles and shared memory there, and each layer's blocks become one wgmma shape fed by
  TMA copies."""
  import itertools
  import re

  import jax

  widths = {"conv1": "m64n80k16", "conv2": "m64n192k16", "conv3": "m64n64k16"}
  for (name, matrix, blocks), (tile_rows, products) in itertools.product(
    extraction_layers()[1:], ((64, 0), (128, 1))
  ):
    product = jax.jit(
      lambda a, m, blocks=blocks, tile_rows=tile_rows, products=products: mosaic_blocked_product(
        a, m, blocks, tile_rows, products_in_flight=products
      )
    )
    text = (
      product.trace(
        jax.ShapeDtypeStruct((250880, matrix.shape[0]), jnp.bfloat16),
        jax.ShapeDtypeStruct(matrix.shape, matrix.dtype),
      )
      .lower(lowering_platforms=("cuda",))
      .as_text()
    )
    assert sorted(set(re.findall(r"wgmma\.mma_async\.sync\.aligned\.(m\d+n\d+k\d+)", text))) == [
      widths[name]
    ], name
    assert "cp.async.bulk.tensor" in text, name


def test_the_persistent_mosaic_kernel_lowers_for_hopper_without_a_gpu():
  """The persistent kernel (no interpret mode: Mosaic GPU's interpreter has no pl.run_state),
  lowered for CUDA on the CPU machine at the block's rows: one wgmma shape per layer and warpgroup
  rows, TMA
  copies, and shared memory within the SM's (Mosaic GPU checks it there)."""
  import re

  import jax

  from benchmarks.extraction_products import mosaic_persistent_blocked_product

  widths = {"conv1": "n80k16", "conv2": "n192k16", "conv3": "n64k16"}
  settings = {
    "conv1": dict(steps=8, warpgroup_rows=128),
    "conv2": dict(steps=6, tile_k=16),
    "conv3": dict(steps=4, tile_k=32, out_slots=1),
  }
  for name, matrix, blocks in extraction_layers()[1:]:
    product = jax.jit(
      lambda a, m, blocks=blocks, name=name: mosaic_persistent_blocked_product(
        a, m, blocks, **settings[name]
      )
    )
    text = (
      product.trace(
        jax.ShapeDtypeStruct((250880, matrix.shape[0]), jnp.bfloat16),
        jax.ShapeDtypeStruct(matrix.shape, matrix.dtype),
      )
      .lower(lowering_platforms=("cuda",))
      .as_text()
    )
    assert sorted(set(re.findall(r"wgmma\.mma_async\.sync\.aligned\.m\d+(n\d+k\d+)", text))) == [
      widths[name]
    ], name
    assert "cp.async.bulk.tensor" in text, name
  _, matrix, blocks = extraction_layers()[2]
  with pytest.raises(ValueError, match="exceeds available shared memory"):
    jax.jit(lambda a, m: mosaic_persistent_blocked_product(a, m, blocks, steps=3)).trace(
      jax.ShapeDtypeStruct((250880, matrix.shape[0]), jnp.bfloat16),
      jax.ShapeDtypeStruct(matrix.shape, matrix.dtype),
    ).lower(lowering_platforms=("cuda",))


def test_the_persistent_mosaic_kernel_refuses_what_it_cannot_tile():
  from benchmarks.extraction_products import mosaic_persistent_blocked_product

  _, matrix, blocks = extraction_layers()[0]
  with pytest.raises(
    ValueError, match=r"a multiple of 8, side by side from column 0; got widths \[36\]"
  ):
    mosaic_persistent_blocked_product(
      jnp.zeros((128, matrix.shape[0]), jnp.bfloat16), matrix, blocks
    )
  _, matrix, blocks = extraction_layers()[2]
  a = jnp.zeros((128, matrix.shape[0]), jnp.bfloat16)
  with pytest.raises(ValueError, match=r"a multiple of 16 columns that divides K=400, got 48"):
    mosaic_persistent_blocked_product(a, matrix, blocks, tile_k=48)
  with pytest.raises(ValueError, match="64 or 128 rows per warpgroup, got 32"):
    mosaic_persistent_blocked_product(a, matrix, blocks, warpgroup_rows=32)
  with pytest.raises(
    ValueError, match="2 or more steps in flight and 1 or 2 output slots, got 2 and 3"
  ):
    mosaic_persistent_blocked_product(a, matrix, blocks, out_slots=3)
  with pytest.raises(
    ValueError, match="the matrix's last 16 \\(alignment padding\\) would be left unwritten"
  ):
    mosaic_persistent_blocked_product(a, jnp.pad(matrix, ((0, 0), (0, 16))), blocks)


@pytest.mark.parametrize("layer,tile_k", [(1, 16), (2, 80), (2, 16), (3, 32)])
def test_the_persistent_pipeline_visits_each_block_chunk_once_in_order(layer, tile_k):
  """step_schedule's traced functions, evaluated at every step, against the blocks' chunks listed
  one by one."""
  from benchmarks.extraction_products import step_schedule

  _, _, blocks = extraction_layers()[layer]
  widened = widened_blocks(blocks, tile_k)
  want = [
    (b, c, c == k0 // tile_k, c == k1 // tile_k - 1)
    for b, (k0, k1, _, _) in enumerate(widened)
    for c in range(k0 // tile_k, k1 // tile_k)
  ]
  steps, block_of, chunk, first_of_block, last_of_block = step_schedule(widened, tile_k)
  got = [
    (
      int(block_of(jnp.int32(s))),
      int(chunk(jnp.int32(s))),
      bool(first_of_block(jnp.int32(s))),
      bool(last_of_block(jnp.int32(s))),
    )
    for s in range(steps)
  ]
  assert got == want


def test_multiply_adds_count_the_blocks_widened_to_the_steps_used():
  from benchmarks.extraction_products import multiply_adds

  _, matrix, blocks = extraction_layers()[1]  # conv1: 5 output rows of 80 columns
  exact = sum((k1 - k0) * 80 for k0, k1, _, _ in blocks)
  assert multiply_adds("row_blocks", matrix, blocks) == exact
  assert multiply_adds("dense", matrix, blocks) == 336 * 400
  # 48-column steps: input rows (0, 72) -> (0, 96), (36, 144) -> (0, 144), (108, 216) -> (96, 240),
  # (180, 288) -> (144, 288), (252, 324) -> (240, 336)
  assert (
    multiply_adds("mosaic_persistent_row_blocks", matrix, blocks, 48)
    == (96 + 144 + 144 + 144 + 96) * 80
  )
