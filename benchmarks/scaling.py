"""Data-parallel scaling of the SELFYNet-R50 training step over the GPUs of one host.

  python -m benchmarks.scaling --trace_dir=/tmp/traces     # on the GPU machine
  python -m benchmarks.scaling --summarize=/tmp/traces      # where tensorflow is installed

Runs the project's sharded train step (the mesh, shardings and jit of stss_jax.train) in bf16 on
8x224x224 clips, for 1, 2, 4, ... of the visible GPUs:
- weak scaling: `--per_device` clips on every GPU (the global batch grows);
- strong scaling: `--global_batch` clips in all (each GPU's share shrinks).
For each it prints clips/s (median over rounds of back-to-back steps, with the spread), the
speed-up over one GPU and the peak memory of GPU 0, and it can write a profiler trace of a few
steps. `--summarize` splits each traced step into all-reduce kernels and the rest (compute),
from the GPU kernel times of the trace (benchmarks.trace_summary). `--loss_steps=N` also trains N
steps of the same global batch on one GPU and on all, and prints both losses.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

import numpy as np

STEPS_PER_ROUND = 30
TRACED_STEPS = 5


def build(devices, global_batch: int):
  """The train step, state and a pool of two device-resident batches for `devices`."""
  import jax
  import jax.numpy as jnp

  from configs import ssv1
  from stss_jax.models import build_model
  from stss_jax.train import optimizer, sharding, steps
  from stss_jax.train.state import create_train_state

  config = ssv1.get_config()
  config.model.dtype = "bfloat16"
  config.batch_size = global_batch
  mesh = sharding.make_mesh(devices)
  sharding.check_batch_size(global_batch, mesh)
  tx = optimizer.build_optimizer(config)
  state, graphs = create_train_state(build_model(config), tx)
  replicated, batch_sharding = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  state = jax.device_put(state, replicated)
  step = jax.jit(
    steps.make_train_step(graphs, tx, optimizer.learning_rate_schedule(config), 0.0),
    in_shardings=(replicated, batch_sharding, replicated),
    out_shardings=(replicated, replicated),
    donate_argnums=0,
  )
  rng = np.random.default_rng(0)
  pool = [
    jax.device_put(
      {
        "clips": jnp.asarray(rng.normal(size=(global_batch, 8, 224, 224, 3)), jnp.bfloat16),
        "labels": jnp.asarray(rng.integers(0, 174, global_batch), jnp.int32),
      },
      batch_sharding,
    )
    for _ in range(2)
  ]
  return step, state, pool, jax.device_put(jax.random.key(0), replicated)


def measure(devices, global_batch: int, rounds: int, trace: pathlib.Path | None) -> dict:
  """clips/s per round of STEPS_PER_ROUND back-to-back steps, and GPU 0's peak memory."""
  import jax

  step, state, pool, key = build(devices, global_batch)
  for i in range(3):  # compile and warm up
    state, metrics = step(state, pool[i % 2], key)
  jax.block_until_ready(metrics)
  per_round = []
  for _ in range(rounds):
    start = time.perf_counter()
    for i in range(STEPS_PER_ROUND):
      state, metrics = step(state, pool[i % 2], key)
    jax.block_until_ready(metrics)
    per_round.append(global_batch * STEPS_PER_ROUND / (time.perf_counter() - start))
  if trace is not None:
    with jax.profiler.trace(str(trace)):
      for i in range(TRACED_STEPS):
        state, metrics = step(state, pool[i % 2], key)
      jax.block_until_ready(metrics)
  stats = devices[0].memory_stats() or {}
  del state
  return {
    "clips_s": statistics.median(per_round),
    "low": min(per_round),
    "high": max(per_round),
    "peak_gib": stats.get("peak_bytes_in_use", float("nan")) / 2**30,
  }


def losses(devices, global_batch: int, num_steps: int) -> list[float]:
  import jax

  step, state, pool, key = build(devices, global_batch)
  out = []
  for i in range(num_steps):
    state, metrics = step(state, pool[i % 2], key)
    out.append(float(jax.device_get(metrics["loss"])))
  return out


def summarize(trace_dir: pathlib.Path) -> None:
  """Per traced configuration: ms per step in all-reduce kernels and in the rest."""
  from benchmarks.trace_summary import kernel_times

  print("| run | step ms on GPU 0's streams | all-reduce ms | compute ms |\n|---|---|---|---|")
  for run in sorted(p for p in trace_dir.iterdir() if p.is_dir()):
    planes = sorted(run.rglob("*.xplane.pb"))
    if not planes:
      continue
    times = kernel_times(str(planes[-1]))
    reduce_ms = sum(
      sum(v)
      for (module, op), v in times.items()
      if any(word in op.lower() for word in ("all-reduce", "allreduce", "nccl"))
    )
    total_ms = sum(sum(v) for v in times.values())
    devices = max(1, int(run.name.split("gpus")[0].rsplit("_", 1)[-1]))

    def per_step(ms, devices=devices):  # kernel times are summed over every GPU plane
      return ms / TRACED_STEPS / devices

    print(
      f"| {run.name} | {per_step(total_ms):.1f} | {per_step(reduce_ms):.1f} | "
      f"{per_step(total_ms - reduce_ms):.1f} |"
    )


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--per_device", type=int, default=32, help="weak scaling: clips per GPU")
  parser.add_argument(
    "--global_batch", type=int, default=64, help="strong scaling: clips in all (the recipe's 64)"
  )
  parser.add_argument(
    "--counts", default="", help="GPU counts, e.g. 1,2,4,8 (default: powers of two up to all)"
  )
  parser.add_argument(
    "--rounds", type=int, default=5, help=f"rounds of {STEPS_PER_ROUND} steps per measurement"
  )
  parser.add_argument(
    "--trace_dir", default="", help="write a profiler trace of each configuration here"
  )
  parser.add_argument(
    "--loss_steps", type=int, default=0, help="compare N steps' losses on 1 GPU and on all"
  )
  parser.add_argument(
    "--summarize", default="", help="summarise the traces of a --trace_dir (needs tensorflow)"
  )
  args = parser.parse_args(argv)
  if args.summarize:
    summarize(pathlib.Path(args.summarize))
    return 0
  import jax

  devices = jax.devices()
  counts = (
    [int(c) for c in args.counts.split(",")]
    if args.counts
    else [2**k for k in range(len(devices).bit_length()) if 2**k <= len(devices)]
  )
  if max(counts) > len(devices):
    print(
      f"error: --counts asks for {max(counts)} GPUs; {len(devices)} are visible", file=sys.stderr
    )
    return 1
  print(
    f"devices: {len(devices)} x {devices[0].device_kind}; jax {jax.__version__}; "
    f"{args.rounds} rounds of {STEPS_PER_ROUND} steps; median clips/s [min, max]"
  )
  print(
    "| scaling | GPUs | global batch | clips/s | speed-up | peak GiB (GPU 0) "
    "|\n|---|---|---|---|---|---|"
  )
  for kind in ("weak", "strong"):
    base = None
    for count in counts:
      batch = args.per_device * count if kind == "weak" else args.global_batch
      if batch % count:
        continue
      trace = pathlib.Path(args.trace_dir) / f"{kind}_{count}gpus" if args.trace_dir else None
      result = measure(devices[:count], batch, args.rounds, trace)
      base = base or result["clips_s"]
      print(
        f"| {kind} | {count} | {batch} | {result['clips_s']:.1f} [{result['low']:.1f}, "
        f"{result['high']:.1f}] | "
        f"{result['clips_s'] / base:.2f}x | {result['peak_gib']:.1f} |",
        flush=True,
      )
  if args.loss_steps:
    one = losses(devices[:1], args.global_batch, args.loss_steps)
    every = losses(devices, args.global_batch, args.loss_steps)
    print(
      f"loss after {args.loss_steps} steps of batch {args.global_batch}: 1 GPU {one[-1]:.6f}, "
      f"{len(devices)} GPUs {every[-1]:.6f}; largest relative difference over the steps "
      f"{max(abs(a - b) / abs(a) for a, b in zip(one, every)):.2e}"
    )
  return 0


if __name__ == "__main__":
  sys.exit(main())
