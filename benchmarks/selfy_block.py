"""Where the SELFY block's time goes: its three parts timed alone, training mode, bf16.

  python -m benchmarks.selfy_block [--batch=32] [--frames=8]     # on a GPU machine

The official block after ResNet-50 stage 2: input (batch, frames, 28, 28, 512), window (5, 9, 9).
Parts: transformation (stride-2 conv + BN + ReLU, then the STSS), extraction (the four convs over
(l, u, v)), integration (per-l convs, fuse, upsample, BN); each forward, and forward + backward
(the loss and the gradients of its parameters and its input), median over fresh random inputs
after warm-up.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.flax_bn import use_flax_batch_norm
from benchmarks.timing import time_jax
from stss_jax import runtime
from stss_jax.layers import SELFYBlock


def timed(name, module, apply, inputs):
  """(forward ms, forward+backward ms, the timed forward+backward function and its input sets)
  of apply(module, x) over the input sets."""
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)

  def forward(params, x, rest):
    return apply(nnx.merge(graphdef, params, rest, copy=True), x)

  def loss(params, x, rest):
    return jnp.sum(forward(params, x, rest).astype(jnp.float32)) * 1e-6

  # The loss value is returned too: from a constant cotangent alone, XLA would drop the forward of
  # a part that ends linearly (the transformation's STSS) and time its backward only.
  backward = jax.value_and_grad(loss, argnums=(0, 1))
  # Named so that the compiled modules (and a profiler trace) say which part they are.
  forward.__name__, backward.__name__ = f"{name}_forward", f"{name}_backward"
  forward, backward = jax.jit(forward), jax.jit(backward)
  sets = [(params, x, rest) for x in inputs]
  return time_jax(forward, sets) * 1e3, time_jax(backward, sets) * 1e3, backward, sets


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--frames", type=int, default=8)
  parser.add_argument(
    "--trace_dir",
    help="also write a jax.profiler trace of 5 forward+backward "
    "calls of each part here (summarise it with benchmarks.trace_summary)",
  )
  parser.add_argument("--stss", default="auto", help="STSS form of the block (runtime policy)")
  parser.add_argument(
    "--extraction", default="dense", help="extraction form of the block (runtime policy)"
  )
  parser.add_argument(
    "--bn",
    choices=("one_pass", "flax"),
    default="one_pass",
    help="the block's BNs: the project's (one_pass) or nnx.BatchNorm (before)",
  )
  parser.add_argument(
    "--row_alignment",
    type=int,
    default=runtime.Policy().row_alignment,
    help="entries the dense extraction pads its rows to a multiple of (1: no padding)",
  )
  args = parser.parse_args()
  try:  # every part below is traced under this policy
    runtime.set_policy(
      runtime.Policy(stss=args.stss, extraction=args.extraction, row_alignment=args.row_alignment)
    )
  except ValueError as e:
    parser.error(str(e))
  if args.bn == "flax":
    use_flax_batch_norm()
  block = SELFYBlock(512, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  block.train()
  rng = np.random.default_rng(0)
  shape = (args.batch, args.frames, 28, 28, 512)
  clips = [jnp.asarray(rng.standard_normal(shape, np.float32), jnp.bfloat16) for _ in range(3)]
  apply = nnx.jit(lambda module, x: module(x))
  stss = [
    jnp.moveaxis(apply(block.stss_transformation, x), 4, 2) for x in clips
  ]  # l-major, as the block
  features = [apply(block.stss_extraction, s) for s in stss]
  parts = {
    "transformation (conv + STSS)": (
      "transformation",
      block.stss_transformation,
      lambda m, x: m(x),
      clips,
    ),
    "extraction": ("extraction", block.stss_extraction, lambda m, s: m(s), stss),
    "integration": ("integration", block.stss_integration, lambda m, f: m(f, (28, 28)), features),
    "whole block": ("block", block, lambda m, x: m(x), clips),
  }
  rows = {title: timed(*part) for title, part in parts.items()}
  if args.trace_dir:
    with jax.profiler.trace(args.trace_dir):
      for _, _, backward, sets in rows.values():
        for i in range(5):
          jax.block_until_ready(backward(*sets[i % len(sets)]))
  device = jax.devices()[0]
  print(
    f"device: {getattr(device, 'device_kind', device.platform)}; jax {jax.__version__}; "
    f"input {shape} bf16, window (5, 9, 9), training mode, STSS {args.stss}, "
    f"extraction {args.extraction}, BN {args.bn}, rows aligned to {args.row_alignment}"
  )
  print("| part | forward ms | forward + backward ms |\n|---|---|---|")
  for name, (forward, backward, _, _) in rows.items():
    print(f"| {name} | {forward:.2f} | {backward:.2f} |")


if __name__ == "__main__":
  main()
