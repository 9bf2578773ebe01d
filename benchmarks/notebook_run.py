"""The demo notebook's short training run, over seeds: how far it gets in its step budget.

  python -m benchmarks.notebook_run --seeds=0,1,2,3 --steps=200,300

Trains configs/default.py exactly as notebooks/demo.ipynb does (warmup 10, 96 validation clips)
for each seed and step budget and prints the validation top-1 of each. The notebook test's
threshold is set from these figures (benchmarks/results/notebook.md).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax

from configs import default
from stss_jax.train import loop


def short_run(seed: int, steps: int) -> float:
  config = default.get_config()
  config.seed = seed
  config.total_steps = config.eval_every_steps = config.checkpoint_every_steps = steps
  config.optimizer.warmup_steps = 10
  config.dataset.num_eval = 96
  config.log_every_steps = 25
  return float(loop.train_and_evaluate(config, tempfile.mkdtemp(prefix="notebook_run_"))["top1"])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", default="0,1,2,3")
  parser.add_argument("--steps", default="300")
  args = parser.parse_args()
  print(f"device: {jax.devices()[0].device_kind}")
  print("| steps | seed | top-1 | wall |\n|---|---|---|---|")
  for steps in map(int, args.steps.split(",")):
    for seed in map(int, args.seeds.split(",")):
      start = time.perf_counter()
      top1 = short_run(seed, steps)
      print(f"| {steps} | {seed} | {top1:.1%} | {time.perf_counter() - start:.0f} s |", flush=True)


if __name__ == "__main__":
  main()
