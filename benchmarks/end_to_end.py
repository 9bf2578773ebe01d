"""main.py's training loop, input included: is it input-bound or step-bound, and how many CPU
cores keep one accelerator fed?

  python -m benchmarks.end_to_end [--config=configs/ssv2.py] [--sources=synthetic,prepared,raw]
      [--steps=20] [--input_clips=256] [--batch_size=8] [--videos=48]
      [--output=benchmarks/results/end_to_end.md]
      [--config.model.depth=18 ...]

For each source it times, on this machine:
  input  the source's training stream alone over --input_clips clips (clips/s, and per CPU core:
         a video source's tf.data graph spreads over every core; the synthetic source draws its
         clips in one Python thread, so its rate is that of one core);
  step   the trainer's compiled training step alone, on one batch of that source kept on the
         devices (clips/s): what the accelerators could do if input were free;
  loop   Trainer.train, main.py's own loop, from the clips/s it writes to metrics.jsonl over the
         last --steps steps (after --steps steps of compilation and warm-up).
The loop cannot beat min(input, step); on a CPU-only machine input and step share the cores, on
an accelerator they overlap. Cores per accelerator = step / (input per core).

Sources: synthetic (the embedded procedural clips, drawn in numpy), prepared (a TFDS build of
--videos generated SSv2-sized videos, 240x427 JPEG frames stored at the config's resize_hw) and
raw (the same videos' frame folders). The model is the config's; pass --config overrides for a
smaller one on a CPU.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import sys
import tempfile
import time

from absl import app, flags, logging
from ml_collections import config_flags

from benchmarks import timing

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  "config", "configs/ssv2.py", "Training config: its model and clip size are timed."
)
flags.DEFINE_list(
  "sources", ["synthetic", "prepared", "raw"], "Sources to time: synthetic, prepared, raw."
)
flags.DEFINE_integer(
  "steps", 20, "Timed steps of the loop and the step (after as many warm-up steps)."
)
flags.DEFINE_integer(
  "input_clips", 256, "Clips of the input measurement (after as many warm-up clips)."
)
flags.DEFINE_integer("batch_size", 8, "Global batch size (clips per step).")
flags.DEFINE_integer("videos", 48, "Generated videos for the prepared and raw sources.")
flags.DEFINE_string("output", "", "Markdown file for the results table.")

SOURCES = ("synthetic", "prepared", "raw")
SSV2_FRAME = (240, 427)  # height x width of an SSv2 video


def source_config(base, source: str, data_root: pathlib.Path):
  config = base.copy_and_resolve_references()
  config.batch_size = FLAGS.batch_size
  if source == "synthetic":
    config.dataset.name = "synthetic"
    config.dataset.num_classes = 6
    config.dataset.classes = (0, 1, 2, 3, 4, 5)
    config.dataset.motion_scale = 1.0
    config.dataset.num_eval = FLAGS.batch_size
  else:
    config.dataset.name = "ssv1"  # benchmarks.input_pipeline writes the SSv1 layout
    config.dataset.num_classes = 2
    config.dataset.no_flip_labels = ()
    config.dataset.data_dir = str(data_root / source)
  return config


def time_input(config) -> float:
  from input_pipeline import sources

  stream = sources.build_source(config).train_iterator(0, config.batch_size)
  batches = max(1, FLAGS.input_clips // config.batch_size)
  for _ in range(batches):  # warm-up: the graph is built, tf.data's autotuning settles
    next(stream)
  start = time.perf_counter()
  for _ in range(batches):
    next(stream)
  return batches * config.batch_size / (time.perf_counter() - start)


def time_loop_and_step(config, workdir: pathlib.Path) -> tuple[float, float]:
  """(loop clips/s from metrics.jsonl, step clips/s on one batch kept on the devices)."""
  import json

  import jax

  from stss_jax.train import loop, sharding

  config = config.copy_and_resolve_references()
  config.total_steps = 2 * FLAGS.steps
  config.log_every_steps = FLAGS.steps
  config.eval_every_steps = config.checkpoint_every_steps = config.total_steps
  config.checkpoint_every_minutes = 0
  with loop.Trainer(config, str(workdir)) as trainer:
    trainer.train()
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    loop_rate = [r["clips_per_second"] for r in rows if r["split"] == "train"][-1]
    batch = next(trainer.source.train_iterator(0, config.batch_size))
    batch = sharding.global_batch(
      {k: v for k, v in batch.items() if k in loop.MODEL_INPUTS}, trainer.mesh
    )
    state = trainer.state
    for _ in range(2):  # the step is compiled already; these settle the devices
      state, metrics = trainer.train_step(state, batch, trainer.rng)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
      state, metrics = trainer.train_step(state, batch, trainer.rng)
    jax.block_until_ready(metrics)
    step_rate = FLAGS.steps * config.batch_size / (time.perf_counter() - start)
    trainer.state = state
  return loop_rate, step_rate


def main(argv) -> None:
  del argv
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  logging.set_verbosity(logging.WARNING)  # the checkpointer's lines would bury the results
  unknown = sorted(set(FLAGS.sources) - set(SOURCES))
  if unknown:
    raise app.UsageError(f"--sources: unknown {unknown}; use some of {SOURCES}")
  import jax

  cores = os.cpu_count() or 1
  base = FLAGS.config
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    if {"prepared", "raw"} & set(FLAGS.sources):  # these need TensorFlow; synthetic does not
      from benchmarks.input_pipeline import write_videos
      from input_pipeline.prepare import prepare

      print(
        f"writing {FLAGS.videos} generated videos of {SSV2_FRAME[0]}x{SSV2_FRAME[1]} frames",
        flush=True,
      )
      write_videos(tmp / "raw", FLAGS.videos, SSV2_FRAME)
      if "prepared" in FLAGS.sources:
        prepare(
          "ssv1", str(tmp / "raw"), str(tmp / "prepared"), resize_hw=tuple(base.input.resize_hw)
        )
    for source in FLAGS.sources:
      config = source_config(base, source, tmp)
      input_rate = time_input(config)
      input_cores = 1 if source == "synthetic" else cores
      loop_rate, step_rate = time_loop_and_step(config, tmp / f"run-{source}")
      rows.append((source, input_rate, input_rate / input_cores, step_rate, loop_rate))
      print(
        f"{source}: input {input_rate:.1f} clips/s ({input_rate / input_cores:.1f} per core), "
        f"step {step_rate:.1f}, "
        f"loop {loop_rate:.1f} clips/s; cores per accelerator to feed the step: "
        f"{step_rate / (input_rate / input_cores):.2g}",
        flush=True,
      )
  if FLAGS.output:
    device = jax.devices()[0]
    cpu = timing.cpu_name()
    model = base.model
    lines = [
      "# End to end: main.py's training loop, input included",
      "",
      f"{datetime.date.today()}, {cores} CPU cores ({cpu}), {jax.device_count()} x "
      f"{device.device_kind} "
      f"({jax.default_backend()}), jax {jax.__version__}.",
      "",
      f"Command: `python -m benchmarks.end_to_end {' '.join(sys.argv[1:])}`.",
      "",
      f"Model: depth {model.depth}, width {model.width}, SELFY after stages "
      f"{tuple(model.selfy_stages)}, "
      f"temporal shift {model.temporal_shift}, dtype {model.dtype}; clips {base.input.num_frames}x"
      f"{base.input.image_size}x{base.input.image_size}, batch {FLAGS.batch_size}; {FLAGS.steps} "
      "timed steps.",
      "",
      "| source | input clips/s (per core) | step clips/s | loop clips/s | loop / min(input, step) "
      "| "
      "cores per accelerator |",
      "|---|---|---|---|---|---|",
    ]
    for source, input_rate, per_core, step_rate, loop_rate in rows:
      lines.append(
        f"| {source} | {input_rate:.1f} ({per_core:.1f}) | {step_rate:.1f} | {loop_rate:.1f} | "
        f"{loop_rate / min(input_rate, step_rate):.2f} | {step_rate / per_core:.2g} |"
      )
    pathlib.Path(FLAGS.output).write_text("\n".join(lines) + "\n")
    print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
  app.run(main)
