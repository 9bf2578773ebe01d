"""SELFYNet-R50 and TSM-R50 training and inference throughput on one accelerator.

  python -m benchmarks.train_step                      # prints markdown tables

8 frames x 224 x 224, bf16 compute (float32 params and BN statistics), the official SGD recipe;
a training step is forward, loss, backward and update, the project's own train_step. Batches are
device-resident random uint8 clips (fresh each step from a pool), as the video sources feed them
and normalised by the step, so input decoding is not measured. --selfy_remat adds each SELFY form
again with the runtime policy's selfy_remat. --resize_on_accelerator adds each model again, trained
on what config.input.resize_on_accelerator feeds: uint8 windows of 240 x 240 with their 'crop_boxes'
(sides drawn from the multi-scale crop's 240, 210, 180 and 158) and 'flips', resized to 224 in the
step (steps.training_clips); its inference column runs on 224 x 224 clips as the others'.
--remat_saves=off,bn_inputs,nothing times each model once per value: without remat, or with
config.model.remat and that config.model.remat_saves (--remat alone: "nothing");
--remat_stages=1,2,3,4/1/1,2 times each rematerialised model once per set of stages
(config.model.remat_stages).

Timing: every model is compiled first; then --rounds rounds, and in each round every model runs
--warmup untimed steps and then --steps_per_round timed back-to-back steps, in turn (TSM first),
timed from the first dispatch to the last result. The untimed steps matter: right after another
model's training, a round ran 2-3 ms per step slower on an H200. A row gives the median step time
over the rounds and their range; the ratio of SELFYNet to TSM is taken round by round (the two ran
seconds apart, so a slow phase of the machine affects both) and given as median and range. Memory is
the compiled training step's own need (arguments + outputs + temporaries - donated buffers, from
XLA's memory analysis), which does not depend on what ran before in the process. Model FLOPs
utilisation counts 3 x forward multiply-adds x 2 (forward + two backward products) over the device's
dense bf16 peak.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.flax_bn import use_flax_batch_norm
from configs import ssv1
from input_pipeline import crop_sizes
from stss_jax import complexity, runtime
from stss_jax.models import build_model
from stss_jax.models.selfynet import STAGES
from stss_jax.train import optimizer, steps
from stss_jax.train.state import create_train_state

PEAK_BF16 = {"H100": 989e12, "H200": 989e12}  # dense bf16 FLOP/s of the SXM parts
# The sides of multi-scale training crops of 240 x 320 frames (the configs' resize_hw).
MULTI_SCALE_SIDES = tuple(int(240 * scale) for scale in crop_sizes.SCALES)


def peak_flops() -> float | None:
  kind = jax.devices()[0].device_kind
  return next((v for k, v in PEAK_BF16.items() if k in kind), None)


@dataclasses.dataclass
class Candidate:
  """One model's compiled steps, its state and a pool of fresh batches."""

  name: str
  batch: int
  macs: float
  program_bytes: int
  train: Callable  # batch -> metrics, advancing the state
  infer: Callable  # batch -> logits
  pool: list  # training batches
  infer_pool: list
  train_rounds: list = dataclasses.field(
    default_factory=list
  )  # seconds per step, one entry per round
  infer_rounds: list = dataclasses.field(default_factory=list)


def padded_crops(rng: np.random.Generator, batch: int, frames: int) -> dict:
  """A batch as resize_on_accelerator feeds it: random 240 x 240 windows, the boxes of crops of the
  multi-scale sides at random places in them, and random flips."""
  side = max(MULTI_SCALE_SIDES)
  crop_hw = rng.choice(MULTI_SCALE_SIDES, (batch, 2))
  corners = rng.integers(0, side - crop_hw + 1)
  clips = rng.integers(0, 256, (batch, frames, side, side, 3), np.uint8)
  return {
    "clips": jnp.asarray(clips),
    "crop_boxes": jnp.asarray(np.concatenate([corners, crop_hw], 1), jnp.int32),
    "flips": jnp.asarray(rng.random(batch) < 0.5),
  }


RAW_SSV2_REGION = (245, 326)  # transforms.first_resize_region((240, 427), (240, 320), (240, 240))


def frame_regions(rng: np.random.Generator, batch: int, frames: int) -> dict:
  """A batch as resize_on_accelerator feeds it from raw SSv2-sized JPEG frames (240 x 427, resized
  to 240 x 320 first): random regions of RAW_SSV2_REGION with their first_resize to 240 x 240
  windows, and crops and flips as padded_crops draws them."""
  windows = padded_crops(rng, batch, 1)
  scale = 427 / 320
  left = rng.integers(0, 81, batch)  # the window's left edge in the 320-wide resized frame
  low = np.maximum(0, np.floor((left + 0.5) * scale - scale - 0.5))
  first_resize = np.zeros((batch, 2, 3), np.float32)
  first_resize[:, 0] = (1.0, 0.0, 240)
  first_resize[:, 1, 0], first_resize[:, 1, 1] = scale, left * scale - low
  first_resize[:, 1, 2] = np.minimum(RAW_SSV2_REGION[1], 427 - low)
  regions = rng.integers(0, 256, (batch, frames, *RAW_SSV2_REGION, 3), np.uint8)
  return {
    "clips": jnp.asarray(regions),
    "first_resize": jnp.asarray(first_resize),
    "crop_boxes": windows["crop_boxes"],
    "flips": windows["flips"],
  }


def build(
  selfy: bool,
  batch: int,
  implementation: str,
  frames: int = 8,
  remat: bool = False,
  selfy_remat: bool = False,
  resize_in_step: str = "",
  remat_saves: str = "nothing",
  remat_stages: tuple[int, ...] = STAGES,
) -> Candidate:
  """`implementation`: "<stss>/<extraction>", e.g. "gather/dense"; selfy_remat: the runtime
  policy's (the SELFY block's similarities and extraction recomputed in the backward);
  resize_in_step: "windows" to train on crop windows (padded_crops), resized and flipped in the
  step; "regions" on raw frames' regions (frame_regions), resized twice in the step."""
  config = ssv1.get_config(str(frames))
  config.model.dtype = "bfloat16"
  config.batch_size = batch
  config.model.selfy_stages = (2,) if selfy else ()
  config.model.remat = remat
  config.model.remat_saves = remat_saves
  config.model.remat_stages = remat_stages
  stss_form, extraction_form = implementation.split("/")
  macs = complexity.measure(config).total_macs
  model = build_model(config)
  tx = optimizer.build_optimizer(config)
  state, graphs = create_train_state(model, tx)
  rng = np.random.default_rng(0)
  # uint8 pixels, as the video sources feed main.py's loop (the step normalises them).
  infer_pool = [
    {
      "clips": jnp.asarray(rng.integers(0, 256, (batch, frames, 224, 224, 3)), jnp.uint8),
      "labels": jnp.asarray(rng.integers(0, 174, batch), jnp.int32),
    }
    for _ in range(3)
  ]
  make = {"windows": padded_crops, "regions": frame_regions}.get(resize_in_step)
  pool = (
    [make(rng, batch, frames) | {"labels": b["labels"]} for b in infer_pool] if make else infer_pool
  )
  key = jax.random.key(0)
  train_step = jax.jit(
    steps.make_train_step(
      graphs,
      tx,
      optimizer.learning_rate_schedule(config),
      0.0,
      image_size=224 if make else None,
      window_hw=(240, 240),
    ),
    donate_argnums=0,
  )
  policy = runtime.Policy(stss=stss_form, extraction=extraction_form, selfy_remat=selfy_remat)
  with runtime.use(policy):  # compiled under this policy
    train_step = train_step.lower(state, pool[0], key).compile()
    eval_step = jax.jit(steps.make_eval_step(graphs)).lower(state, infer_pool[0]).compile()
  memory = train_step.memory_analysis()
  program_bytes = (
    (
      memory.argument_size_in_bytes
      + memory.output_size_in_bytes
      + memory.temp_size_in_bytes
      - memory.alias_size_in_bytes
    )
    if memory is not None
    else -1
  )
  holder = {"state": state}

  def train(batch_):
    holder["state"], metrics = train_step(holder["state"], batch_, key)
    return metrics

  name = f"SELFYNet-R50 ({implementation})" if selfy else "TSM-R50"
  name += (
    (", remat" + (f" saving {remat_saves}" if remat_saves != "nothing" else "")) if remat else ""
  )
  name += (
    f" of stages {','.join(map(str, remat_stages))}"
    if remat and set(remat_stages) != set(STAGES)
    else ""
  )
  name += ", SELFY remat" if selfy_remat else ""
  name += f", {frames} frames" if frames != 8 else ""
  name += {
    "windows": ", crops resized in the step",
    "regions": ", raw frame regions resized in the step",
  }.get(resize_in_step, "")
  return Candidate(
    name,
    batch,
    macs,
    program_bytes,
    train,
    lambda b: eval_step(holder["state"], b),
    pool,
    infer_pool,
  )


def time_round(fn: Callable, pool: list, steps_: int, offset: int) -> float:
  """Seconds per call over `steps_` calls dispatched back to back, fresh batches from the pool."""
  start = time.perf_counter()
  results = [fn(pool[(offset + i) % len(pool)]) for i in range(steps_)]
  jax.block_until_ready(results)
  return (time.perf_counter() - start) / steps_


def measure(candidates: list[Candidate], rounds: int, steps_per_round: int, warmup: int) -> None:
  """Fills each candidate's train_rounds and infer_rounds, the models taking turns in every round.

  Every timed round follows `warmup` untimed steps of the same program: a training round that
  directly followed another model's training steps ran 2-3 ms per step slower on an H200, for
  both models (gpu.md, "program switches"), which a single-model training run never sees."""
  for r in range(rounds):
    for c in candidates:
      time_round(c.train, c.pool, warmup, r)
      c.train_rounds.append(time_round(c.train, c.pool, steps_per_round, r))
    for c in candidates:
      time_round(c.infer, c.infer_pool, warmup, r)
      c.infer_rounds.append(time_round(c.infer, c.infer_pool, steps_per_round, r))


def _range(values) -> str:
  return f"{min(values):.3g}-{max(values):.3g}"


def table(candidates: list[Candidate]) -> str:
  peak = peak_flops()
  reference = candidates[0]
  lines = [
    "| model | batch | train clips/s | step ms: median (range over rounds) | SELFY/TSM step: "
    "median (range) "
    "| inference clips/s | MFU | training step GiB |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for c in candidates:
    step = statistics.median(c.train_rounds)
    ratios = [a / b for a, b in zip(c.train_rounds, reference.train_rounds)]
    mfu = 3 * 2 * c.macs * c.batch / step / peak if peak else float("nan")
    lines.append(
      f"| {c.name} | {c.batch} | {c.batch / step:.1f} | {step * 1e3:.2f} "
      f"({_range([t * 1e3 for t in c.train_rounds])}) "
      f"| {'-' if c is reference else f'{statistics.median(ratios):.3f} ({_range(ratios)})'} "
      f"| {c.batch / statistics.median(c.infer_rounds):.1f} | {mfu:.1%} | "
      f"{c.program_bytes / 2**30:.2f} |"
    )
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser()
  parser.add_argument("--batches", default="8,32")
  parser.add_argument("--implementations", default="gather/dense,matmul/dense,shift/conv")
  parser.add_argument("--frames", type=int, default=8)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--steps_per_round", type=int, default=30)
  parser.add_argument(
    "--warmup",
    type=int,
    default=30,
    help="untimed steps of the same program before every timed round (see measure)",
  )
  parser.add_argument(
    "--remat",
    action="store_true",
    help="config.model.remat: residual blocks recomputed in the backward",
  )
  parser.add_argument(
    "--remat_saves",
    default="off",
    help="comma-separated, each model once per value: 'off' (no remat), or config.model.remat on "
    "with this config.model.remat_saves ('nothing', 'bn_inputs'); --remat means 'nothing'",
  )
  parser.add_argument(
    "--remat_stages",
    default="1,2,3,4",
    help="'/'-separated sets of stages, each rematerialised model once per set "
    "(config.model.remat_stages), e.g. 1,2,3,4/1/1,2",
  )
  parser.add_argument(
    "--selfy_remat",
    action="store_true",
    help="also time each SELFY form under the runtime policy's selfy_remat",
  )
  parser.add_argument(
    "--resize_on_accelerator",
    action="store_true",
    help="also time each model trained on crop windows resized in the step (padded_crops)",
  )
  parser.add_argument(
    "--bn",
    choices=("one_pass", "flax"),
    default="one_pass",
    help="every BN: the project's (one_pass) or nnx.BatchNorm (before)",
  )
  parser.add_argument(
    "--trace_dir",
    help="also write a jax.profiler trace of 3 training steps of each model, one "
    "folder each, BATCH_INDEX (summarise it with benchmarks.trace_summary)",
  )
  args = parser.parse_args(argv)
  if args.steps_per_round < 1 or args.rounds < 1:
    parser.error("--rounds and --steps_per_round must be at least 1")
  remat_variants = ["nothing"] if args.remat else args.remat_saves.split(",")
  try:
    stage_sets = [
      tuple(int(stage) for stage in stages.split(",")) for stages in args.remat_stages.split("/")
    ]
  except ValueError:
    parser.error(
      f"--remat_stages={args.remat_stages!r}: give '/'-separated sets of comma-separated stages, "
      "e.g. 1,2,3,4/1"
    )
  if args.bn == "flax":
    use_flax_batch_norm()
  print(
    f"device: {jax.devices()[0].device_kind}; jax {jax.__version__}; BN {args.bn}; {args.rounds} "
    "rounds of "
    f"{args.steps_per_round} steps per model",
    flush=True,
  )
  for batch in map(int, args.batches.split(",")):
    candidates = []
    for selfy, implementation in [(False, "auto/dense")] + [
      (True, i) for i in args.implementations.split(",")
    ]:
      for saves in remat_variants:
        for stages in stage_sets if saves != "off" else [STAGES]:
          remat = dict(
            remat=saves != "off",
            remat_saves="nothing" if saves == "off" else saves,
            remat_stages=stages,
          )
          candidates.append(build(selfy, batch, implementation, args.frames, **remat))
          if args.resize_on_accelerator:
            for kind in ("windows", "regions"):
              candidates.append(
                build(selfy, batch, implementation, args.frames, resize_in_step=kind, **remat)
              )
          if args.selfy_remat and selfy:
            candidates.append(
              build(selfy, batch, implementation, args.frames, selfy_remat=True, **remat)
            )
    measure(candidates, args.rounds, args.steps_per_round, args.warmup)
    print(table(candidates), flush=True)
    if args.trace_dir:
      for index, candidate in enumerate(candidates):
        with jax.profiler.trace(f"{args.trace_dir}/{batch}_{index}"):
          jax.block_until_ready([candidate.train(batch_) for batch_ in candidate.pool])
        print(f"traced {candidate.name} in {args.trace_dir}/{batch}_{index}", flush=True)
    del candidates


if __name__ == "__main__":
  sys.exit(main())
