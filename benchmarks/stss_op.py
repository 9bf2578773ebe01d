"""The STSS transform alone at the official shape, ours against the authors' formulation.

  python -m benchmarks.stss_op            # on a GPU machine; prints a markdown table

Shape: 8 clips x 8 frames (--clips sets the clips), 128 channels, 14x14, window (5, 9, 9) (320
frame pairs). Forward and forward+backward (the similarities and their vector-Jacobian product for a
random cotangent, both returned), float32 and bf16, median
of many runs over fresh random inputs after warm-up; forward + backward also as 16 calls inside
one lax.scan, which leaves no host dispatch between calls. Each row also gives the relative error of
its similarities and feature gradient against the float32 shift form, and the seconds of its
first forward + backward call (compilation included). The floor is the fewest bytes (features
read once, similarities written once; for the backward also the cotangent read and the feature
gradient written) over the measured copy bandwidth. The baseline is the authors' fallback
formulation (a full HW x HW correlation per frame pair, then gathering each window) written
here in PyTorch; their CUDA correlation-sampler package cannot be built on a machine without
network access to fetch it.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import copy_bandwidth, time_jax
from stss_jax import ops

SHAPE = (8, 8, 14, 14, 128)
WINDOW = (5, 9, 9)
IMPLEMENTATIONS = ("shift", "matmul", "gather")


def time_in_scan(fn, input_sets, calls: int = 16) -> float:
  """Seconds per call of fn(*inputs) when `calls` calls over the input sets run back to back
  inside one lax.scan: no host dispatch between them, so the figure is what the device takes.
  Each call's outputs are summed into the scan's carry, so that no call's work can be dropped."""
  stacked = [
    jnp.stack([input_sets[i % len(input_sets)][k] for i in range(calls)])
    for k in range(len(input_sets[0]))
  ]

  def body(total, inputs):
    outputs = jax.tree.leaves(fn(*inputs))
    return total + sum(jnp.sum(o.astype(jnp.float32)) for o in outputs), None

  run = jax.jit(lambda *xs: jax.lax.scan(body, jnp.float32(0), xs)[0])
  return time_jax(run, [stacked], repeats=10, warmup=2, group=1) / calls


def jax_variants(input_sets, cotangents, implementations=IMPLEMENTATIONS, trace_dir=None):
  """{name: (forward s, forward + backward s, forward + backward s in one scan, seconds of the
  first forward + backward call)}; `cotangents` in ops.stss's order. With
  `trace_dir`, each form's 10 forward + backward calls after its timing are traced to
  trace_dir/NAME (benchmarks.trace_summary gives the time of each kernel)."""
  rows = {}
  for implementation in implementations:
    forward = jax.jit(lambda x, impl=implementation: _stss(x, impl))
    # Returns the similarities too: with the gradient alone XLA drops the forward's products
    # (the STSS is linear in the normalised features), and the figure would be the backward only.
    backward = jax.jit(lambda x, g, impl=implementation: _forward_and_gradient(x, g, impl))
    start = time.perf_counter()
    jax.block_until_ready(backward(input_sets[0], cotangents[0]))  # compiles
    first_call = time.perf_counter() - start
    rows[f"jax {implementation}"] = (
      time_jax(forward, [(x,) for x in input_sets]),
      time_jax(backward, list(zip(input_sets, cotangents))),
      time_in_scan(backward, list(zip(input_sets, cotangents))),
      first_call,
    )
    if trace_dir:
      name = f"{input_sets[0].dtype}_{re.sub(r'[^A-Za-z0-9]+', '_', implementation)}"
      with jax.profiler.trace(os.path.join(trace_dir, name)):
        jax.block_until_ready(
          [
            backward(input_sets[i % len(input_sets)], cotangents[i % len(cotangents)])
            for i in range(10)
          ]
        )
  return rows


def _stss(x, implementation):
  return ops.stss(x, WINDOW, implementation)


def _forward_and_gradient(x, cotangent, implementation):
  similarities, pullback = jax.vjp(lambda f: _stss(f, implementation), x)
  return similarities, pullback(cotangent)[0]


def torch_stss(device="cuda", shape=SHAPE, window=WINDOW):
  """The authors' fallback formulation: (B*T, C, H, W) -> (B, T, L, HW, U*V)."""
  import torch

  B, T, H, W, C = shape
  L, U, V = window
  hw = H * W
  # Index of each window cell in the full correlation row, and which cells fall inside the frame.
  h, w, u, v = np.meshgrid(np.arange(H), np.arange(W), np.arange(U), np.arange(V), indexing="ij")
  hh, ww = h + u - U // 2, w + v - V // 2
  inside = torch.tensor(
    ((hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)).reshape(hw, U * V), device=device
  )
  index = torch.tensor(
    (np.clip(hh, 0, H - 1) * W + np.clip(ww, 0, W - 1)).reshape(hw, U * V), device=device
  )

  def stss(x):  # x: (B*T, C, H, W) as in the official code
    x = x / torch.sqrt((x.float() ** 2).sum(1, keepdim=True) + 1e-6).to(x.dtype)
    x = x.view(B, T, C, hw)
    pad = torch.nn.functional.pad(x, (0, 0, 0, 0, L // 2, L // 2))
    neighbours = torch.stack([pad[:, l : l + T] for l in range(L)], 2)  # (B, T, L, C, HW)
    queries = x[:, :, None].expand(-1, -1, L, -1, -1)
    corr = torch.einsum("btlcn,btlcm->btlnm", queries, neighbours)
    picked = torch.gather(corr, 4, index.expand(B, T, L, hw, U * V))
    return picked * inside

  return stss


def torch_baseline(dtype_name, repeats=50, shape=SHAPE):
  import torch

  dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
  B, T, H, W, C = shape
  L, U, V = WINDOW
  hw = H * W
  stss = torch_stss(shape=shape)

  def timed(fn, inputs):
    for i in range(5):
      fn(*inputs[i % len(inputs)])
    torch.cuda.synchronize()
    times = []
    for i in range(repeats):
      start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
      start.record()
      fn(*inputs[i % len(inputs)])
      end.record()
      torch.cuda.synchronize()
      times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)

  xs = [
    torch.randn(B * T, C, H, W, device="cuda", dtype=dtype, requires_grad=True) for _ in range(4)
  ]
  gs = [torch.randn(B, T, L, hw, U * V, device="cuda", dtype=dtype) for _ in range(4)]

  def forward(x):
    with torch.no_grad():
      return stss(x)

  def backward(x, g):
    similarities = stss(x)
    return similarities, torch.autograd.grad(similarities, x, g)[0]

  return timed(forward, [(x,) for x in xs]), timed(backward, list(zip(xs, gs)))


def main(argv=None):
  parser = argparse.ArgumentParser()
  parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
  parser.add_argument(
    "--dtypes", default="float32,bfloat16", help="comma-separated, of float32 and bfloat16"
  )
  parser.add_argument(
    "--implementations",
    default=",".join(IMPLEMENTATIONS),
    help=f"comma-separated STSS forms to time, of {IMPLEMENTATIONS}",
  )
  parser.add_argument(
    "--clips",
    type=int,
    default=SHAPE[0],
    help=f"clips of {SHAPE[1]} frames (default {SHAPE[0]}: {SHAPE[0] * SHAPE[1]} frames; the SELFY "
    "block at batch 32 sees 32)",
  )
  parser.add_argument(
    "--trace_dir",
    help="also write a jax.profiler trace of 10 forward + backward calls of each "
    "form here, one folder per dtype and form (run with XLA_FLAGS=--xla_gpu_enable_command_buffer= "
    "so that every kernel shows; summarise with benchmarks.trace_summary)",
  )
  args = parser.parse_args(argv)
  if args.clips < 1:
    parser.error(f"--clips={args.clips}: use at least 1")
  shape = (args.clips, *SHAPE[1:])
  bandwidth = copy_bandwidth()
  print(
    f"device: {jax.devices()[0].device_kind}; jax {jax.__version__}; copy bandwidth "
    f"{bandwidth / 1e12:.2f} TB/s; "
    f"features {shape}, window {WINDOW}"
  )
  rng = np.random.default_rng(0)
  B, T, H, W, C = shape
  out_elems = B * T * H * W * np.prod(WINDOW)
  # Rows print as they are measured, so that a run cut short keeps what it measured.
  print(
    "| dtype | implementation | forward ms | fwd+bwd ms | fwd+bwd ms in one scan | floor fwd / "
    "fwd+bwd ms "
    "| rel. error similarities / gradient | first fwd+bwd call s "
    "|\n|---|---|---|---|---|---|---|---|",
    flush=True,
  )
  for dtype_name in args.dtypes.split(","):
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype_name]
    size = jnp.dtype(dtype).itemsize
    in_bytes, out_bytes = np.prod(shape) * size, out_elems * size
    floors = (
      (in_bytes + out_bytes) / bandwidth * 1e3,
      (2 * in_bytes + 2 * out_bytes + in_bytes) / bandwidth * 1e3,
    )
    input_sets = [jnp.asarray(rng.normal(size=shape), dtype) for _ in range(4)]
    cotangents = [jnp.asarray(rng.normal(size=shape[:4] + WINDOW), dtype) for _ in range(4)]
    # The float32 shift form is the reference for every row's similarities and feature gradient.
    reference = [
      np.asarray(a, np.float64)
      for a in _forward_and_gradient(
        input_sets[0].astype(jnp.float32), cotangents[0].astype(jnp.float32), "shift"
      )
    ]
    rows = jax_variants(input_sets, cotangents, args.implementations.split(","), args.trace_dir)
    for name, (fwd, bwd, bwd_in_scan, first_call) in rows.items():
      implementation = name.split()[-1]
      got = _forward_and_gradient(input_sets[0], cotangents[0], implementation)
      errors = [
        np.linalg.norm(np.asarray(a.astype(jnp.float32), np.float64) - r) / np.linalg.norm(r)
        for a, r in zip(got, reference)
      ]
      print(
        f"| {dtype_name} | {name} | {fwd * 1e3:.3f} | {bwd * 1e3:.3f} | {bwd_in_scan * 1e3:.3f} "
        f"| {floors[0]:.4f} / {floors[1]:.4f} | {errors[0]:.1e} / {errors[1]:.1e} | "
        f"{first_call:.1f} |",
        flush=True,
      )
    if not args.no_torch:
      fwd, bwd = torch_baseline(dtype_name, shape=shape)
      print(
        f"| {dtype_name} | PyTorch full correlation + gather (authors' fallback) | {fwd * 1e3:.3f} "
        f"| {bwd * 1e3:.3f} | | | | |",
        flush=True,
      )


if __name__ == "__main__":
  sys.exit(main())
