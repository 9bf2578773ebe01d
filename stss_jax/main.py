"""Trains and evaluates SELFYNet (`python main.py` in a checkout, `stss-train` once installed).

  python main.py --config=configs/default.py --workdir=runs/default
  python main.py --config=configs/ssv1.py --workdir=runs/ssv1 --config.batch_size=32
  python main.py --config=configs/ssv1.py --workdir=runs/ssv1 --mode=eval
  # robustness (python -m stss_jax.robustness sweeps every corruption):
  python main.py --config=configs/ssv1.py --workdir=runs/ssv1 --mode=eval \
      --config.eval.corruption=occlusion --config.eval.severity=3

Rerunning the same command resumes from the workdir's latest checkpoint. SIGTERM or Ctrl-C at
any moment exits 0 and keeps every checkpoint: during a training step, the step ends and is
saved first (a second Ctrl-C stops at once). On several hosts (TPU pod slices, GPU clusters) run
the same command on every host with --multihost.
"""

import pathlib
import posixpath
import sys

import jax
from absl import flags

from stss_jax import cli, model_dir
from stss_jax.train import loop, preemption


def define_flags(flag_values: flags.FlagValues, argv) -> None:
  cli.define_config(flag_values, argv)
  flags.DEFINE_string(
    "workdir",
    None,
    "Directory (local or gs://) for checkpoints, metrics and reports; "
    "default runs/CONFIG (e.g. runs/ssv2, runs/default-tiny).",
    flag_values=flag_values,
  )
  flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "eval"],
    "Train (and evaluate), or only evaluate.",
    flag_values=flag_values,
  )
  flags.DEFINE_string(
    "checkpoint",
    None,
    "--mode=eval: a model directory to evaluate (WORKDIR/model, convert's); its own config is "
    "used when --config is not given. Default workdir: beside it, DIR/../eval.",
    flag_values=flag_values,
  )
  flags.DEFINE_bool(
    "multihost",
    False,
    "Call jax.distributed.initialize() (TPU pods and clusters detect the rest).",
    flag_values=flag_values,
  )
  flags.DEFINE_string(
    "coordinator_address",
    None,
    "host:port of process 0, when not detected.",
    flag_values=flag_values,
  )
  flags.DEFINE_integer(
    "num_processes", None, "Processes in the job, when not detected.", flag_values=flag_values
  )
  flags.DEFINE_integer(
    "process_id", None, "This process's index, when not detected.", flag_values=flag_values
  )


def default_workdir(config_file: str) -> str:
  """runs/NAME for --config=.../NAME.py, runs/NAME-ARG for NAME.py:ARG."""
  path, _, variant = config_file.partition(":")
  name = pathlib.PurePath(path).stem
  return str(pathlib.PurePath("runs") / (f"{name}-{variant}" if variant else name))


def run(flag_values: flags.FlagValues) -> int:
  if flag_values.multihost or flag_values.coordinator_address:
    jax.distributed.initialize(
      flag_values.coordinator_address, flag_values.num_processes, flag_values.process_id
    )
  if jax.process_index() == 0:
    print(
      f"{jax.process_count()} process(es), {jax.device_count()} {jax.devices()[0].platform} "
      "device(s)",
      file=sys.stderr,
    )
  config = flag_values.config
  checkpoint = flag_values.checkpoint
  if checkpoint:
    if flag_values.mode != "eval":
      raise ValueError(
        f"--checkpoint={checkpoint} is for --mode=eval; to train from a model directory, use "
        f"--config.init_from={checkpoint}"
      )
    if config.init_from and config.init_from != checkpoint:
      raise ValueError(
        f"--checkpoint={checkpoint} and --config.init_from={config.init_from}: give one"
      )
    model_dir.check_inference_config(checkpoint, config)
    config.init_from = checkpoint
  workdir = flag_values.workdir or (
    posixpath.join(posixpath.dirname(checkpoint.rstrip("/")), "eval")
    if checkpoint
    else default_workdir(flag_values["config"].config_filename)
  )
  if not flag_values.workdir and jax.process_index() == 0:
    print(f"workdir: {workdir} (--workdir chooses another)", file=sys.stderr)
  command = loop.train_and_evaluate if flag_values.mode == "train" else loop.evaluate_only
  try:
    report = command(config, workdir)
  except preemption.Preempted as stopped:
    if jax.process_index() == 0:
      print(stopped, file=sys.stderr)
    return 0
  if jax.process_index() == 0:
    corruption = loop.corruption_labels(config)
    under = (
      f" under {corruption['corruption']} (severity {corruption['severity']})" if corruption else ""
    )
    print(
      f"validation{under}: top-1 {report['top1']:.2%}  top-5 {report['top5']:.2%}  loss "
      f"{report['loss']:.4f}  "
      f"mean class accuracy {report['mean_class_accuracy']:.2%}  "
      f"(workdir {workdir})"
    )
  return 0


def main(argv=None) -> int:
  # The handlers come first, so that a preemption during flag parsing, tracing or compiling
  # stops as cleanly as one during training. When this call is the whole process (argv from
  # sys.argv), a signal after the command's end is ignored: the process only exits.
  with preemption.handlers(keep_ignoring=argv is None):
    try:
      return cli.main(
        __doc__,
        define_flags,
        run,
        argv,
        errors={loop.NonFiniteLossError: 1},
        model_configs={"config": "checkpoint"},
      )
    except preemption.Stopped as stopped:
      print(stopped, file=sys.stderr)
      return 0


if __name__ == "__main__":
  sys.exit(main())
