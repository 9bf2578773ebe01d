"""main.py end to end on the tiny synthetic config: sharding, resumption, bad input.

main runs in process (conftest gives every test process eight CPU devices); only the tests whose
subject is the process boundary (SIGKILL, two processes) start subprocesses.
"""

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

import main
from configs import default
from stss_jax import main as stss_main
from stss_jax import model_dir
from stss_jax.models import build_model
from stss_jax.train import checkpoints, loop, sharding, workdir
from tests import conftest
from tests.test_video_source import TINY_INPUT, TINY_MODEL, write_ssv1
from tests.test_workdir import flip_bytes

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = "--config=configs/default.py:tiny"


def run_main(capsys, workdir, *overrides) -> tuple[int, str, str]:
  """main.py in process: (exit status, stdout, stderr)."""
  capsys.readouterr()
  status = main.main(["main.py", TINY, f"--workdir={workdir}", *map(str, overrides)])
  out, err = capsys.readouterr()
  return status, out, err


def main_process(workdir, *overrides, devices=1, config=TINY, **popen):
  """main.py as its own process, for the tests of what crosses a process boundary."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=conftest.xla_flags(devices))
  return subprocess.Popen(
    [sys.executable, "main.py", config, f"--workdir={workdir}", *map(str, overrides)],
    cwd=ROOT,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    **popen,
  )


def records(workdir, split):
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [r for r in map(json.loads, lines) if r["split"] == split]


def rows(workdir):
  return [
    (r["step"], r["split"])
    for r in map(json.loads, (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines())
  ]


def kept_steps(workdir):
  return sorted(
    int(p.name) for p in (pathlib.Path(workdir) / "checkpoints").iterdir() if p.name.isdigit()
  )


def final_params(workdir, step):
  restored = ocp.StandardCheckpointer().restore(
    pathlib.Path(workdir).absolute() / "checkpoints" / str(step) / "default"
  )
  return jax.tree.leaves(restored["params"])


def assert_same_end(workdir, reference, step):
  """The run in `workdir` ended with `reference`'s parameters, bit for bit, and its metrics rows."""
  for a, b in zip(final_params(reference, step), final_params(workdir, step), strict=True):
    np.testing.assert_array_equal(a, b)
  assert rows(workdir) == rows(reference)  # one row per (step, split)


def wait_for(condition, process, seconds=600):
  """Polls `condition` until it holds, `process` ends or the time is up."""
  deadline = time.time() + seconds
  while not condition() and process.poll() is None and time.time() < deadline:
    time.sleep(0.05)


def test_eight_devices_give_the_loss_of_one(tmp_path, capsys):
  # One checkpoint and one evaluation, at the last step: the losses are what is compared.
  status, out, err = run_main(
    capsys,
    tmp_path / "eight",
    "--config.total_steps=3",
    "--config.eval_every_steps=3",
    "--config.checkpoint_every_steps=3",
  )
  assert status == 0, err[-3000:]
  assert "8 cpu device(s)" in err and "validation: top-1" in out
  # The same three steps on one device: the step function alone, no evaluation or checkpoint.
  config = default.get_config("tiny")
  config.total_steps = 3
  with loop.Trainer(config, str(tmp_path / "one"), devices=jax.devices()[:1]) as one:
    batches, loss_one = one.source.train_iterator(0, config.batch_size), []
    for _ in range(3):
      batch = {k: v for k, v in next(batches).items() if k in loop.MODEL_INPUTS}
      one.state, metrics = one.train_step(
        one.state, sharding.global_batch(batch, one.mesh), one.rng
      )
      loss_one.append(float(metrics["loss"]))
  loss_eight = [r["loss"] for r in records(tmp_path / "eight", "train")]
  assert len(loss_one) == 3
  np.testing.assert_allclose(loss_eight, loss_one, rtol=1e-4)
  evals = records(tmp_path / "eight", "validation")
  assert {"step", "split", "loss", "top1", "top5", "mean_class_accuracy"} <= set(evals[-1])
  assert (
    tmp_path / "eight" / "model" / model_dir.CONFIG_FILE
  ).is_file()  # the export predict reads


@pytest.mark.slow  # main.py's resume path; the SIGKILL test below checks it across processes too
def test_rerun_resumes_and_ends_where_an_uninterrupted_run_ends(tmp_path, capsys):
  by_clock = [
    "--config.checkpoint_every_steps=100",
    "--config.checkpoint_every_minutes=1e-9",
  ]  # due at every log
  assert run_main(capsys, tmp_path / "whole", "--config.total_steps=4", *by_clock)[0] == 0
  assert run_main(capsys, tmp_path / "parts", "--config.total_steps=2", *by_clock)[0] == 0
  status, _, err = run_main(capsys, tmp_path / "parts", "--config.total_steps=4", *by_clock)
  assert status == 0 and "resumed from step 2" in err
  assert_same_end(tmp_path / "parts", tmp_path / "whole", 4)
  assert kept_steps(tmp_path / "parts") == kept_steps(tmp_path / "whole")
  assert 3 in kept_steps(
    tmp_path / "whole"
  )  # neither an evaluation nor a checkpoint_every_steps step: the clock's


@pytest.mark.slow  # two short trainings on video files
def test_a_bad_evaluation_video_keeps_the_checkpoint_and_the_rerun_evaluates_it(tmp_path, capsys):
  write_ssv1(tmp_path / "data")
  frames = tmp_path / "data" / "20bn-something-something-v1" / "validation1"
  frames.rename(tmp_path / "aside")
  args = [
    "main.py",
    "--config=configs/ssv1.py",
    f"--workdir={tmp_path / 'run'}",
    f"--config.dataset.data_dir={tmp_path / 'data'}",
    *TINY_INPUT,
    *TINY_MODEL,
    "--config.dataset.no_flip_labels=(0,)",
    "--config.batch_size=8",
    "--config.total_steps=4",
    "--config.eval_every_steps=2",
    "--config.checkpoint_every_steps=2",
  ]
  capsys.readouterr()
  assert main.main(args) == 1
  line = capsys.readouterr().err.strip().splitlines()[-1]
  assert line == (
    f"error: evaluation at step 2 failed: evaluation video {frames}: no such frame folder. "
    "Checkpoint 2 "
    f"is complete in {tmp_path / 'run' / 'checkpoints'}; fix the evaluation data and rerun the "
    "same "
    "command: it evaluates that checkpoint and goes on"
  )
  assert sorted(
    p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if not p.name.endswith(".json")
  ) == ["2"]
  (tmp_path / "aside").rename(frames)
  assert main.main(args) == 0
  err = capsys.readouterr().err
  assert (
    "resumed from step 2" in err and "step 2: validation" in err and "step 4: validation" in err
  )
  assert rows(tmp_path / "run") == [
    (2, "train"),
    (2, "validation"),
    (4, "train"),
    (4, "validation"),
  ]


@pytest.mark.slow  # two processes into one workdir
def test_a_second_run_into_a_busy_workdir_stops_and_the_first_finishes(tmp_path):
  steps = [
    "--config.total_steps=4",
    "--config.checkpoint_every_steps=2",
    "--config.eval_every_steps=2",
  ]
  first = main_process(tmp_path / "shared", *steps)
  wait_for((tmp_path / "shared" / workdir.LOCK_FILE).exists, first, seconds=300)
  second = main_process(tmp_path / "shared", *steps)
  _, err = second.communicate(timeout=300)
  assert second.returncode == 1
  assert (
    err.strip()
    .splitlines()[-1]
    .startswith(
      f"error: --workdir {tmp_path / 'shared'} is in use by the run of pid {first.pid} on host "
    )
  )
  assert first.wait(timeout=900) == 0, first.stderr.read()[-3000:]
  alone = main_process(tmp_path / "alone", *steps)
  assert alone.wait(timeout=900) == 0
  assert_same_end(tmp_path / "shared", tmp_path / "alone", 4)
  assert rows(tmp_path / "shared") == [
    (1, "train"),
    (2, "train"),
    (2, "validation"),
    (3, "train"),
    (4, "train"),
    (4, "validation"),
  ]


@pytest.mark.slow
def test_sigkill_then_rerun_ends_where_an_uninterrupted_run_ends(tmp_path):
  steps = [
    "--config.total_steps=8",
    "--config.eval_every_steps=4",
    "--config.checkpoint_every_steps=2",
  ]
  whole = main_process(tmp_path / "whole", *steps)
  assert whole.wait(timeout=900) == 0, whole.stderr.read()[-3000:]
  killed = main_process(tmp_path / "killed", *steps)
  wait_for(lambda: (tmp_path / "killed" / "checkpoints" / "4").is_dir(), killed)
  killed.send_signal(signal.SIGKILL)
  killed.wait()
  assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
  resumed = main_process(tmp_path / "killed", *steps)
  _, err = resumed.communicate(timeout=900)
  assert resumed.returncode == 0, err[-3000:]
  assert "resumed from step" in err
  assert_same_end(tmp_path / "killed", tmp_path / "whole", 8)
  assert kept_steps(tmp_path / "killed") == kept_steps(tmp_path / "whole")  # the best one too


@pytest.mark.slow  # three short trainings
def test_a_damaged_latest_checkpoint_falls_back_and_ends_where_an_uninterrupted_run_ends(
  tmp_path, capsys
):
  assert run_main(capsys, tmp_path / "whole", "--config.total_steps=6")[0] == 0
  assert run_main(capsys, tmp_path / "damaged", "--config.total_steps=4")[0] == 0
  flip_bytes(tmp_path / "damaged" / "checkpoints" / "4")
  status, _, err = run_main(capsys, tmp_path / "damaged", "--config.total_steps=6")
  assert status == 0, err[-3000:]
  assert "skipped the damaged checkpoint of step 4: " in err and "resumed from step 2" in err
  assert_same_end(tmp_path / "damaged", tmp_path / "whole", 6)


@pytest.mark.slow  # signals across a process boundary
def test_sigterm_at_a_random_moment_saves_and_the_rerun_ends_where_an_uninterrupted_run_ends(
  tmp_path,
):
  steps = [
    "--config.total_steps=30",
    "--config.eval_every_steps=30",
    "--config.checkpoint_every_steps=30",
  ]
  whole = main_process(tmp_path / "whole", *steps)
  assert whole.wait(timeout=900) == 0, whole.stderr.read()[-3000:]
  stopped = main_process(tmp_path / "stopped", *steps)
  metrics = tmp_path / "stopped" / "metrics.jsonl"
  wait_for(lambda: metrics.exists() and metrics.read_text(), stopped)
  time.sleep(np.random.default_rng().uniform(0, 0.5))
  logged = len(metrics.read_text().splitlines())
  stopped.send_signal(signal.SIGTERM)
  _, err = stopped.communicate(timeout=300)
  assert stopped.returncode == 0, err[-3000:]
  step = int(err.split("stopped by SIGTERM after step ")[1].split(";")[0])
  assert logged <= step <= logged + 2 and step < 30  # the step in flight, not a later one
  assert kept_steps(tmp_path / "stopped") == [step]
  resumed = main_process(tmp_path / "stopped", *steps)
  _, err = resumed.communicate(timeout=900)
  assert resumed.returncode == 0 and f"resumed from step {step}" in err, err[-3000:]
  assert_same_end(tmp_path / "stopped", tmp_path / "whole", 30)
  assert records(tmp_path / "stopped", "validation") == records(tmp_path / "whole", "validation")


@pytest.mark.parametrize(
  "overrides,message",
  [
    (["--config.batch_size=12"], "error: config.batch_size = 12 is not divisible by the 8"),
    (
      ["--config.grad_accum_steps=2"],
      "8 data-parallel devices x config.grad_accum_steps = 2; use a multiple of 16",
    ),
    (
      ["--config.grad_accum_steps=0"],
      "error: config.grad_accum_steps = 0 must be a positive integer",
    ),
    (["--config.dataset.name=kinetics"], "error: config.dataset.name = 'kinetics' is unknown"),
    (["--config.total_steps=0"], "error: config.total_steps = 0 must be a positive integer"),
    (["--config.optimizer.schedule=linear"], "error: config.optimizer.schedule = 'linear'"),
    (
      ["--config.model.depth=19"],
      "error: config.model.depth = 19 is not allowed: use one of [18, 34, 50, 101]",
    ),
  ],
)
def test_bad_config_value_is_one_line_naming_the_key(tmp_path, capsys, overrides, message):
  status, _, err = run_main(capsys, tmp_path / "run", *overrides)
  assert status == 1
  assert message in err
  assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err


@pytest.mark.parametrize(
  "argv,message",
  [
    (
      ["--config.bacth_size=8"],
      "error: unknown config key 'bacth_size' Did you mean \"batch_size\"",
    ),
    (["--config.batch_size=eight"], "error: flag --config.batch_size=eight"),
    (["--bogus=1"], "error: Unknown command line flag 'bogus'"),
    (["--config=configs/nowhere.py"], "configs/nowhere.py"),
    (["--config=configs/default.py:huge"], "configs/default.py:huge: use one of"),
  ],
)
def test_bad_command_line_is_one_line_and_does_no_work(tmp_path, capsys, argv, message):
  capsys.readouterr()
  status = main.main(["main.py", TINY, f"--workdir={tmp_path / 'run'}", *argv])
  err = capsys.readouterr().err
  assert status == 2
  assert message in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
  assert not (tmp_path / "run").exists()


def test_unwritable_workdir_and_other_models_checkpoints_are_refused(tmp_path, capsys):
  blocker = tmp_path / "file"
  blocker.write_text("")
  status, _, err = run_main(capsys, blocker / "run", "--config.total_steps=1")
  assert status == 1 and "is not writable" in err
  # What the trainer records beside its first checkpoint: the tiny config's architecture.
  checkpoints.TrainCheckpoints(tmp_path / "run", default.get_config("tiny"), keep=1).close()
  assert (
    json.loads((tmp_path / "run" / "checkpoints" / model_dir.CONFIG_FILE).read_text())["model"][
      "depth"
    ]
    == 18
  )
  status, _, err = run_main(
    capsys, tmp_path / "run", "--config.total_steps=1", "--config.model.depth=34"
  )
  assert status == 1
  assert (
    "holds checkpoints of another model (model.depth is 18 in the checkpoint, 34 in the config)"
    in err
  )


@pytest.mark.slow
def test_two_processes_with_jax_distributed_agree_with_one(tmp_path):
  """Each host reads its own slice of every batch of a TFDS build, and the two train as one. (The
  synthetic source's slices: tests/test_synthetic.py, in process.)"""
  from input_pipeline import prepare
  from tests.test_video_source import TINY_INPUT, TINY_MODEL, write_ssv1

  write_ssv1(tmp_path / "raw", train=10, validation=5)
  prepare.prepare(
    "ssv1", str(tmp_path / "raw"), str(tmp_path / "tfds"), resize_hw=(40, 48), workers=1
  )
  config = "--config=configs/ssv1.py"
  steps = [
    "--config.total_steps=3",
    "--config.eval_every_steps=3",
    "--config.checkpoint_every_steps=3",
    f"--config.dataset.data_dir={tmp_path / 'tfds'}",
    *TINY_INPUT,
    *TINY_MODEL,
    "--config.batch_size=4",
    "--config.log_every_steps=1",
    "--config.dataset.no_flip_labels=(0,1)",
  ]
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  hosts = [
    main_process(
      tmp_path / "two",
      *steps,
      f"--coordinator_address=localhost:{port}",
      "--num_processes=2",
      f"--process_id={i}",
      config=config,
    )
    for i in range(2)
  ]
  outputs = [h.communicate(timeout=900)[1] for h in hosts]
  assert [h.returncode for h in hosts] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
  single = main_process(tmp_path / "one", *steps, devices=2, config=config)
  assert single.wait(timeout=900) == 0, single.stderr.read()[-3000:]
  np.testing.assert_allclose(
    [r["loss"] for r in records(tmp_path / "two", "train")],
    [r["loss"] for r in records(tmp_path / "one", "train")],
    rtol=1e-4,
  )
  assert (
    records(tmp_path / "two", "validation")[-1]["top1"]
    == records(tmp_path / "one", "validation")[-1]["top1"]
  )
  # Both end with a model directory, and it is the same model.
  from stss_jax import predict

  clips = np.random.default_rng(0).normal(size=(2, 4, 32, 32, 3)).astype(np.float32)
  np.save(tmp_path / "clips.npy", clips)
  for run in ("one", "two"):
    assert (
      predict.main(
        [
          "predict",
          f"--checkpoint={tmp_path / run / 'model'}",
          f"--clip={tmp_path / 'clips.npy'}",
          f"--output={tmp_path / run}.npy",
        ]
      )
      == 0
    )
  np.testing.assert_allclose(
    np.load(tmp_path / "two.npy"), np.load(tmp_path / "one.npy"), rtol=1e-4, atol=1e-5
  )


@pytest.mark.slow  # a training run through main, checkpointing every step until it overflows
def test_nonfinite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
  status, _, err = run_main(
    capsys,
    tmp_path / "run",
    "--config.total_steps=30",
    "--config.checkpoint_every_steps=1",
    "--config.eval_every_steps=100",
    "--config.optimizer.warmup_steps=1",
    "--config.optimizer.learning_rate=1e32",
  )
  assert status == 1
  assert "error: parameters overflowed at step 2" in err or "error: loss is nan" in err
  latest = max(
    int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit()
  )
  for leaf in final_params(tmp_path / "run", latest):
    assert np.all(np.isfinite(leaf))


def test_eval_mode_reads_a_converted_model_directory(tmp_path, capsys):
  config = default.get_config("tiny")
  model_dir.save(tmp_path / "model", build_model(config), config)
  status, out, err = run_main(
    capsys, tmp_path / "run", "--mode=eval", f"--config.init_from={tmp_path / 'model'}"
  )
  assert status == 0, err[-3000:]
  assert "validation: top-1" in out
  assert records(tmp_path / "run", "validation")[-1]["step"] == 0


def test_the_design_card_command_names_its_workdir_and_how_to_get_the_data(
  tmp_path, capsys, monkeypatch
):
  monkeypatch.chdir(tmp_path)  # configs/ssv2.py is then found in the configs package
  monkeypatch.setenv(
    "TFDS_DATA_DIR", str(tmp_path / "tfds")
  )  # the default TFDS data dir, without SSv2
  capsys.readouterr()
  assert main.main(["main.py", "--config=configs/ssv2.py"]) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert "workdir: runs/ssv2 (--workdir chooses another)" in err
  assert err[-1] == (
    f"error: something_something_v2 is not built in the default TFDS data dir {tmp_path / 'tfds'}: "
    "build it with `python -m input_pipeline.prepare --dataset=ssv2 --manual_dir=RAW` (RAW: the "
    "official download), or point --config.dataset.data_dir at a TFDS data dir that holds it, or "
    "at the dataset in its official layout (docs/datasets.md)"
  )
  assert stss_main.default_workdir("configs/default.py:tiny") == "runs/default-tiny"


def test_tensorflow_sees_no_accelerator_before_the_data_source_is_built(
  tmp_path, capsys, monkeypatch
):
  """The full tensorflow build (Colab, TPU VMs) would take accelerator memory with its first op."""
  import tensorflow as tf

  from input_pipeline import sources

  events = []
  hide = tf.config.set_visible_devices
  build = sources.build_source

  def hiding(devices, kind=None):
    events.append(("hidden", kind, list(devices)))
    return hide(devices, kind)

  def building(config):
    events.append(("source built", [d.device_type for d in tf.config.get_visible_devices()]))
    return build(config)

  monkeypatch.setattr(tf.config, "set_visible_devices", hiding)
  monkeypatch.setattr(sources, "build_source", building)
  assert run_main(capsys, tmp_path / "run", "--config.total_steps=1")[0] == 0
  built = events.index(next(e for e in events if e[0] == "source built"))
  hidden = {e[1] for e in events[:built] if e[0] == "hidden" and e[2] == []}
  assert hidden == {"GPU", "TPU"}
  assert events[built][1] == ["CPU"]
