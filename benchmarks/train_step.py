"""SELFYNet-R50 and TSM-R50 training and inference throughput on one accelerator.

  python -m benchmarks.train_step                      # prints a markdown table

8 frames x 224 x 224, bf16 compute (float32 params and BN statistics), the official SGD recipe;
a training step is forward, loss, backward and update, the project's own train_step. Batches are
device-resident random clips (fresh each step from a pool), so input decoding is not measured.
Model FLOPs utilisation counts 3 x forward multiply-adds x 2 (forward + two backward products)
over the device's dense bf16 peak.
"""
from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.flax_bn import use_flax_batch_norm
from benchmarks.timing import time_jax
from configs import ssv1
from stss_jax import complexity
from stss_jax.models import build_model
from stss_jax.train import optimizer, steps
from stss_jax.train.state import create_train_state

PEAK_BF16 = {"H100": 989e12, "H200": 989e12}  # dense bf16 FLOP/s of the SXM parts


def peak_flops() -> float | None:
  kind = jax.devices()[0].device_kind
  return next((v for k, v in PEAK_BF16.items() if k in kind), None)


def measure(selfy: bool, batch: int, implementation: str, repeats: int, frames: int = 8) -> dict:
  """`implementation`: "<stss>/<extraction>", e.g. "gather/dense"."""
  config = ssv1.get_config(str(frames))
  config.model.dtype = "bfloat16"
  config.batch_size = batch
  config.model.selfy_stages = (2,) if selfy else ()
  config.model.selfy.stss_implementation, config.model.selfy.extraction_implementation = implementation.split("/")
  macs = complexity.measure(config).total_macs
  model = build_model(config)
  tx = optimizer.build_optimizer(config)
  state, graphs = create_train_state(model, tx)
  train_step = jax.jit(steps.make_train_step(graphs, tx, optimizer.learning_rate_schedule(config), 0.0),
                       donate_argnums=0)
  eval_step = jax.jit(steps.make_eval_step(graphs))
  rng = np.random.default_rng(0)
  pool = [{"clips": jnp.asarray(rng.normal(size=(batch, frames, 224, 224, 3)), jnp.bfloat16),
           "labels": jnp.asarray(rng.integers(0, 174, batch), jnp.int32)} for _ in range(3)]
  key = jax.random.key(0)
  holder = {"state": state}

  def one_step(batch_):
    holder["state"], metrics = train_step(holder["state"], batch_, key)
    return metrics

  train_s = time_jax(one_step, [(b,) for b in pool], repeats=repeats, warmup=3, group=5)
  infer_s = time_jax(lambda b: eval_step(holder["state"], b), [(b,) for b in pool], repeats=repeats, warmup=3, group=5)
  stats = jax.devices()[0].memory_stats() or {}
  peak = peak_flops()
  train_flops = 3 * 2 * macs * batch
  return {
      "model": f"SELFYNet-R50 ({implementation})" if selfy else "TSM-R50",
      "frames": frames,
      "batch": batch,
      "train clips/s": batch / train_s,
      "step ms": train_s * 1e3,
      "inference clips/s": batch / infer_s,
      "MFU": train_flops / train_s / peak if peak else float("nan"),
      "peak GiB": stats.get("peak_bytes_in_use", float("nan")) / 2**30,
  }


def main(argv=None):
  parser = argparse.ArgumentParser()
  parser.add_argument("--batches", default="8,32")
  parser.add_argument("--implementations", default="gather/dense,matmul/dense,shift/conv")
  parser.add_argument("--frames", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=6)
  parser.add_argument("--bn", choices=("one_pass", "flax"), default="one_pass",
                      help="every BN: the project's (one_pass) or nnx.BatchNorm (before)")
  args = parser.parse_args(argv)
  if args.bn == "flax":
    use_flax_batch_norm()
  print(f"device: {jax.devices()[0].device_kind}; jax {jax.__version__}; BN {args.bn}")
  rows = []
  for batch in map(int, args.batches.split(",")):
    rows.append(measure(False, batch, "auto/dense", args.repeats, args.frames))
    for implementation in args.implementations.split(","):
      rows.append(measure(True, batch, implementation, args.repeats, args.frames))
    print(rows[-1], flush=True)
  keys = list(rows[0])
  print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
  for row in rows:
    print("| " + " | ".join(f"{v:.1f}" if isinstance(v, float) and k != "MFU" else
                            (f"{v:.1%}" if k == "MFU" else str(v)) for k, v in row.items()) + " |")


if __name__ == "__main__":
  sys.exit(main())
