"""Timing helpers shared by the GPU benchmarks: medians over fresh inputs, after warm-up."""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def time_jax(fn, input_sets, repeats: int = 50, warmup: int = 5, group: int = 10) -> float:
  """Median seconds per call of fn(*inputs), cycling through `input_sets` so caches do not
  flatter it. Calls are timed in groups of `group` dispatched back to back, as inside a training
  loop, so the host's dispatch latency overlaps device work instead of adding to each call."""
  for i in range(warmup):
    jax.block_until_ready(fn(*input_sets[i % len(input_sets)]))
  times = []
  for r in range(repeats):
    start = time.perf_counter()
    results = [fn(*input_sets[(r * group + i) % len(input_sets)]) for i in range(group)]
    jax.block_until_ready(results)
    times.append((time.perf_counter() - start) / group)
  return statistics.median(times)


def copy_bandwidth(num_bytes: int = 2 << 30) -> float:
  """Measured device-to-device bandwidth (bytes read + written per second) of a large copy."""
  x = jnp.asarray(np.random.default_rng(0).random(num_bytes // 4, np.float32))
  copy = jax.jit(lambda a: a * 1.0 + 0.0)
  seconds = time_jax(copy, [(x,)], repeats=20)
  return 2 * num_bytes / seconds


def cpu_name() -> str:
  """This machine's CPU model, as /proc/cpuinfo names it (the platform's processor elsewhere)."""
  import platform

  try:
    with open("/proc/cpuinfo") as info:
      return next(
        (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
        platform.processor(),
      )
  except OSError:
    return platform.processor()
