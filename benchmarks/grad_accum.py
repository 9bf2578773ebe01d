"""Peak memory and speed of the official batch (64 clips x 16 frames) with gradient accumulation.

  python -m benchmarks.grad_accum --dtypes=bfloat16,float32 --accum=1,2,4,8

SELFYNet-R50 at 224x224, the official SGD recipe and the project's own train_step, for each
compute dtype and each grad_accum_steps K (micro-batch 64 / K). Every row runs in a process of
its own, because a device's peak-memory counter only ever grows. A row that does not fit says
so. Prints a markdown table; the peak is what XLA's allocator held at most, which is what a
smaller GPU must hold (plus the CUDA context, about 0.5 GiB).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

BATCH, FRAMES = 64, 16


def measure(dtype: str, accum: int, repeats: int) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from benchmarks.timing import time_jax
  from configs import ssv1
  from stss_jax.models import build_model
  from stss_jax.train import optimizer, steps
  from stss_jax.train.state import create_train_state

  config = ssv1.get_config(str(FRAMES))
  config.model.dtype = dtype
  config.batch_size, config.grad_accum_steps = BATCH, accum
  model = build_model(config)
  tx = optimizer.build_optimizer(config)
  state, graphs = create_train_state(model, tx)
  train_step = jax.jit(
    steps.make_train_step(graphs, tx, optimizer.learning_rate_schedule(config), 0.0, accum),
    donate_argnums=0,
  )
  rng = np.random.default_rng(0)
  pool = [
    {
      "clips": jnp.asarray(rng.normal(size=(BATCH, FRAMES, 224, 224, 3)), jnp.dtype(dtype)),
      "labels": jnp.asarray(rng.integers(0, 174, BATCH), jnp.int32),
    }
    for _ in range(2)
  ]
  key = jax.random.key(0)
  holder = {"state": state}

  def one_step(batch):
    holder["state"], metrics = train_step(holder["state"], batch, key)
    return metrics

  seconds = time_jax(one_step, [(b,) for b in pool], repeats=repeats, warmup=2, group=3)
  stats = jax.devices()[0].memory_stats() or {}
  return {
    "device": jax.devices()[0].device_kind,
    "dtype": dtype,
    "grad_accum_steps": accum,
    "micro-batch": BATCH // accum,
    "peak GiB": stats.get("peak_bytes_in_use", float("nan")) / 2**30,
    "train clips/s": BATCH / seconds,
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--dtypes", default="bfloat16,float32")
  parser.add_argument("--accum", default="1,2,4,8")
  parser.add_argument("--repeats", type=int, default=4, help="timed groups of 3 steps")
  parser.add_argument("--one", help=argparse.SUPPRESS)  # "dtype,K": measure one row, print JSON
  args = parser.parse_args(argv)
  if args.one:
    dtype, accum = args.one.split(",")
    print(json.dumps(measure(dtype, int(accum), args.repeats)))
    return 0
  rows = []
  for dtype in args.dtypes.split(","):
    for accum in map(int, args.accum.split(",")):
      child = subprocess.run(
        [
          sys.executable,
          "-m",
          "benchmarks.grad_accum",
          f"--one={dtype},{accum}",
          f"--repeats={args.repeats}",
        ],
        capture_output=True,
        text=True,
      )
      if child.returncode == 0:
        row = json.loads(child.stdout.strip().splitlines()[-1])
      else:
        fit = "RESOURCE_EXHAUSTED" in child.stderr or "Out of memory" in child.stderr
        print(child.stderr[-2000:], file=sys.stderr)
        row = {
          "dtype": dtype,
          "grad_accum_steps": accum,
          "micro-batch": BATCH // accum,
          "peak GiB": "does not fit" if fit else "failed",
          "train clips/s": "",
        }
      rows.append(row)
      print(row, flush=True)
  print(
    f"\nSELFYNet-R50, batch {BATCH} x {FRAMES} frames x 224 x 224, {rows[0].get('device', '')}\n"
  )
  keys = ["dtype", "grad_accum_steps", "micro-batch", "peak GiB", "train clips/s"]
  print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
  for row in rows:
    print(
      "| "
      + " | ".join(f"{row[k]:.1f}" if isinstance(row[k], float) else str(row[k]) for k in keys)
      + " |"
    )
  return 0


if __name__ == "__main__":
  sys.exit(main())
