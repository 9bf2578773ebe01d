"""Where the SELFY block's time goes: its three parts timed alone, training mode, bf16.

  python -m benchmarks.selfy_block [--batch=32] [--frames=8]     # on a GPU machine

The official block after ResNet-50 stage 2: input (batch, frames, 28, 28, 512), window (5, 9, 9).
Parts: transformation (stride-2 conv + BN + ReLU, then the STSS), extraction (the four convs over
(l, u, v)), integration (per-l convs, fuse, upsample, BN); each forward, and forward + backward
(gradients of its parameters and its input), median over fresh random inputs after warm-up.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.timing import time_jax
from stss_jax.layers import SELFYBlock


def timed(module, apply, inputs):
  """(forward ms, forward+backward ms) of apply(module, x) over the input sets."""
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)

  def loss(params, x, rest):
    out = apply(nnx.merge(graphdef, params, rest, copy=True), x)
    return jnp.sum(out.astype(jnp.float32)) * 1e-6

  forward = jax.jit(lambda params, x, rest: apply(nnx.merge(graphdef, params, rest, copy=True), x))
  backward = jax.jit(jax.grad(loss, argnums=(0, 1)))
  sets = [(params, x, rest) for x in inputs]
  return time_jax(forward, sets) * 1e3, time_jax(backward, sets) * 1e3


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--frames", type=int, default=8)
  args = parser.parse_args()
  block = SELFYBlock(512, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  block.train()
  rng = np.random.default_rng(0)
  shape = (args.batch, args.frames, 28, 28, 512)
  clips = [jnp.asarray(rng.standard_normal(shape, np.float32), jnp.bfloat16) for _ in range(3)]
  apply = nnx.jit(lambda module, x: module(x))
  stss = [apply(block.stss_transformation, x) for x in clips]
  features = [apply(block.stss_extraction, s) for s in stss]
  rows = {
      "transformation (conv + STSS)": timed(block.stss_transformation, lambda m, x: m(x), clips),
      "extraction": timed(block.stss_extraction, lambda m, s: m(s), stss),
      "integration": timed(block.stss_integration, lambda m, f: m(f, (28, 28)), features),
      "whole block": timed(block, lambda m, x: m(x), clips),
  }
  device = jax.devices()[0]
  print(f"device: {getattr(device, 'device_kind', device.platform)}; jax {jax.__version__}; "
        f"input {shape} bf16, window (5, 9, 9), training mode")
  print("| part | forward ms | forward + backward ms |\n|---|---|---|")
  for name, (forward, backward) in rows.items():
    print(f"| {name} | {forward:.2f} | {backward:.2f} |")


if __name__ == "__main__":
  main()
