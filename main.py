"""Trains and evaluates SELFYNet.

  python main.py --config=configs/default.py --workdir=runs/default
  python main.py --config=configs/ssv1.py --workdir=runs/ssv1 --config.batch_size=32
  python main.py --config=configs/ssv1.py --workdir=runs/ssv1 --mode=eval

Rerunning the same command resumes from the workdir's latest checkpoint. On several hosts
(TPU pod slices, GPU clusters) run the same command on every host with --multihost.
"""
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from stss_jax.train import loop

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and reports.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "Train (and evaluate), or only evaluate.")
_MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "Call jax.distributed.initialize() (TPU pods and clusters detect the rest).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0, when not detected.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job, when not detected.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, when not detected.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None or not _WORKDIR.value:
    raise app.UsageError("--config=configs/NAME.py and --workdir=DIR are required")
  logging.set_verbosity(logging.WARNING)  # library chatter off; progress and results are printed
  if _MULTIHOST.value or _COORDINATOR.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if jax.process_index() == 0:
    print(f"{jax.process_count()} process(es), {jax.device_count()} {jax.devices()[0].platform} device(s)",
          file=sys.stderr)
  run = loop.train_and_evaluate if _MODE.value == "train" else loop.evaluate_only
  try:
    report = run(_CONFIG.value, _WORKDIR.value)
  except (ValueError, FileNotFoundError, loop.NonFiniteLossError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  if jax.process_index() == 0:
    print(f"validation: top-1 {report['top1']:.2%}  top-5 {report['top5']:.2%}  loss {report['loss']:.4f}  "
          f"(workdir {_WORKDIR.value})")
  return 0


if __name__ == "__main__":
  app.run(main)
