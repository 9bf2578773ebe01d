"""Data-parallel scaling of the SELFYNet-R50 training step over the GPUs of one host.

  python -m benchmarks.scaling             # on a machine with several GPUs

Runs the project's sharded train step (the mesh, shardings and jit of stss_jax.train) with 32
clips per device, on one device and then on all, and prints clips/s and the ratio.
"""
from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import time_jax
from configs import ssv1
from stss_jax.models import build_model
from stss_jax.train import optimizer, sharding, steps
from stss_jax.train.state import create_train_state


def clips_per_second(devices, per_device: int, repeats: int) -> float:
  config = ssv1.get_config()
  config.model.dtype = "bfloat16"
  config.batch_size = per_device * len(devices)
  mesh = sharding.make_mesh(devices)
  tx = optimizer.build_optimizer(config)
  state, graphs = create_train_state(build_model(config), tx)
  replicated, batch_sharding = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  state = jax.device_put(state, replicated)
  step = jax.jit(steps.make_train_step(graphs, tx, optimizer.learning_rate_schedule(config), 0.0),
                 in_shardings=(replicated, batch_sharding, replicated), out_shardings=(replicated, replicated),
                 donate_argnums=0)
  rng = np.random.default_rng(0)
  pool = [jax.device_put({"clips": jnp.asarray(rng.normal(size=(config.batch_size, 8, 224, 224, 3)), jnp.bfloat16),
                          "labels": jnp.asarray(rng.integers(0, 174, config.batch_size), jnp.int32)}, batch_sharding)
          for _ in range(2)]
  holder, key = {"state": state}, jax.device_put(jax.random.key(0), replicated)

  def one_step(batch):
    holder["state"], metrics = step(holder["state"], batch, key)
    return metrics

  return config.batch_size / time_jax(one_step, [(b,) for b in pool], repeats=repeats, warmup=3, group=5)


def main(argv=None):
  parser = argparse.ArgumentParser()
  parser.add_argument("--per_device", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=6)
  args = parser.parse_args(argv)
  devices = jax.devices()
  print(f"devices: {len(devices)} x {devices[0].device_kind}; jax {jax.__version__}")
  one = clips_per_second(devices[:1], args.per_device, args.repeats)
  every = clips_per_second(devices, args.per_device, args.repeats)
  print(f"| GPUs | global batch | train clips/s |\n|---|---|---|\n| 1 | {args.per_device} | {one:.1f} |\n"
        f"| {len(devices)} | {args.per_device * len(devices)} | {every:.1f} |")
  print(f"scaling {len(devices)} GPUs / 1 GPU: {every / one:.2f}x")


if __name__ == "__main__":
  sys.exit(main())
