"""main.py end to end on the synthetic dataset: sharding, resumption after SIGKILL, bad input."""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = [
    "--config=configs/default.py",
    "--config.model.width=8",
    "--config.model.selfy.hidden=8",
    "--config.model.selfy.window=(3,5,5)",
    "--config.model.selfy.ext_channels=(2,4,8,8)",
    "--config.model.selfy.int_channels=(8,8,8,8)",
    "--config.input.image_size=32",
    "--config.input.num_frames=4",
    "--config.batch_size=8",
    "--config.dataset.num_eval=12",
    "--config.log_every_steps=1",
]


def main_py(workdir, *overrides, devices=1, wait=True):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  command = [sys.executable, "main.py", *TINY, f"--workdir={workdir}", *map(str, overrides)]
  if not wait:
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def records(workdir, split):
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [r for r in map(json.loads, lines) if r["split"] == split]


def final_params(workdir, step):
  restored = ocp.StandardCheckpointer().restore(pathlib.Path(workdir).absolute() / "checkpoints" / str(step) / "default")
  return jax.tree.leaves(restored["params"])


def test_eight_devices_give_the_loss_of_one(tmp_path):
  steps = ["--config.total_steps=3", "--config.eval_every_steps=3", "--config.checkpoint_every_steps=3"]
  one = main_py(tmp_path / "one", *steps, devices=1)
  eight = main_py(tmp_path / "eight", *steps, devices=8)
  assert one.returncode == 0, one.stderr[-3000:]
  assert eight.returncode == 0, eight.stderr[-3000:]
  loss_one = [r["loss"] for r in records(tmp_path / "one", "train")]
  loss_eight = [r["loss"] for r in records(tmp_path / "eight", "train")]
  assert len(loss_one) == 3
  np.testing.assert_allclose(loss_eight, loss_one, rtol=1e-4)
  evals = records(tmp_path / "eight", "validation")
  assert {"step", "split", "loss", "top1", "top5"} <= set(evals[-1])
  assert (tmp_path / "one" / "model" / "model_config.json").is_file()  # the export predict reads
  assert "validation: top-1" in eight.stdout


def test_sigkill_then_rerun_ends_where_an_uninterrupted_run_ends(tmp_path):
  steps = ["--config.total_steps=8", "--config.eval_every_steps=4", "--config.checkpoint_every_steps=2"]
  whole = main_py(tmp_path / "whole", *steps)
  assert whole.returncode == 0, whole.stderr[-3000:]

  killed = main_py(tmp_path / "killed", *steps, wait=False)
  checkpoints = tmp_path / "killed" / "checkpoints"
  deadline = time.time() + 600
  while not (checkpoints / "4").is_dir() and killed.poll() is None and time.time() < deadline:
    time.sleep(0.2)
  killed.send_signal(signal.SIGKILL)
  killed.wait()
  assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
  resumed = main_py(tmp_path / "killed", *steps)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from step" in resumed.stderr
  for a, b in zip(final_params(tmp_path / "whole", 8), final_params(tmp_path / "killed", 8), strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "overrides,devices,message",
    [
        (["--config.batch_size=12"], 8, "config.batch_size = 12 is not divisible by the 8"),
        (["--config.dataset.name=kinetics"], 1, "config.dataset.name = 'kinetics' is unknown"),
        (["--config.total_steps=0"], 1, "config.total_steps = 0 must be a positive integer"),
        (["--config.optimizer.schedule=linear"], 1, "config.optimizer.schedule = 'linear'"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path, overrides, devices, message):
  done = main_py(tmp_path / "run", *overrides, devices=devices)
  assert done.returncode == 1
  assert f"error: {message}" in done.stderr
  assert "Traceback" not in done.stderr


def test_unwritable_workdir_and_other_models_checkpoints_are_refused(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  done = main_py(blocker / "run", "--config.total_steps=1")
  assert done.returncode == 1 and "is not writable" in done.stderr

  steps = ["--config.total_steps=1", "--config.eval_every_steps=1", "--config.checkpoint_every_steps=1"]
  assert main_py(tmp_path / "run", *steps).returncode == 0
  done = main_py(tmp_path / "run", *steps, "--config.model.depth=34")
  assert done.returncode == 1
  assert "holds checkpoints of another model (model.depth is 18 in the checkpoint, 34 in the config)" in done.stderr


def test_unknown_config_key_stops_before_any_work(tmp_path):
  done = main_py(tmp_path / "run", "--config.bacth_size=8")
  assert done.returncode != 0
  assert "bacth_size" in done.stderr
  assert not (tmp_path / "run").exists()


def test_two_processes_with_jax_distributed_agree_with_one(tmp_path):
  steps = ["--config.total_steps=3", "--config.eval_every_steps=3", "--config.checkpoint_every_steps=3"]
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  hosts = [main_py(tmp_path / "two", *steps, f"--coordinator_address=localhost:{port}", "--num_processes=2",
                   f"--process_id={i}", wait=False) for i in range(2)]
  outputs = [h.communicate(timeout=900)[0].decode() for h in hosts]
  assert [h.returncode for h in hosts] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
  single = main_py(tmp_path / "one", *steps, devices=2)
  assert single.returncode == 0, single.stderr[-3000:]
  np.testing.assert_allclose([r["loss"] for r in records(tmp_path / "two", "train")],
                             [r["loss"] for r in records(tmp_path / "one", "train")], rtol=1e-4)
  assert records(tmp_path / "two", "validation")[-1]["top1"] == records(tmp_path / "one", "validation")[-1]["top1"]


def test_nonfinite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
  done = main_py(tmp_path / "run", "--config.total_steps=30", "--config.checkpoint_every_steps=1",
                 "--config.eval_every_steps=100", "--config.optimizer.warmup_steps=1",
                 "--config.optimizer.learning_rate=1e32")
  assert done.returncode == 1
  assert "error: parameters overflowed at step 2" in done.stderr or "error: loss is nan" in done.stderr
  latest = max(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit())
  for leaf in final_params(tmp_path / "run", latest):
    assert np.all(np.isfinite(leaf))


def test_eval_mode_reads_a_converted_model_directory(tmp_path):
  from configs import default
  from stss_jax.models import build_model
  from stss_jax.train.checkpoints import save_model

  config = default.get_config()
  config.model.width, config.model.selfy.hidden = 8, 8
  config.model.selfy.window, config.model.selfy.ext_channels = (3, 5, 5), (2, 4, 8, 8)
  config.model.selfy.int_channels = (8, 8, 8, 8)
  config.input.image_size, config.input.num_frames = 32, 4
  save_model(tmp_path / "model", build_model(config), config)
  done = main_py(tmp_path / "run", "--mode=eval", f"--config.init_from={tmp_path / 'model'}")
  assert done.returncode == 0, done.stderr[-3000:]
  assert "validation: top-1" in done.stdout
  assert records(tmp_path / "run", "validation")[-1]["step"] == 0
