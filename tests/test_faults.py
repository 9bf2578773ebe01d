"""Faults at unlucky moments: a metrics row cut off mid-write, a lost checkpoint record, a broken
config file, a signal outside the training loop, odd lock files. Each loses no work, and a
command that cannot go on ends with one line that names the culprit."""

import json
import logging
import os
import pathlib
import signal

import jax.numpy as jnp
import pytest

import main
from configs import default
from input_pipeline import sources
from stss_jax import cli, model_dir
from stss_jax.train import checkpoints, loop, reporting, steps, workdir
from tests.test_train import TINY, assert_same_end, rows, run_main

SCALARS = {"loss": 1.0, "top5": 1.0, "mean_class_accuracy": 0.5}


def cut_last_row(path: pathlib.Path) -> str:
  """Cuts metrics.jsonl's last row in the middle, as a kill during its append leaves it."""
  lines = path.read_text().splitlines(keepends=True)
  last = lines[-1]
  path.write_text("".join(lines[:-1]) + last[: len(last) // 2])
  return last


@pytest.mark.parametrize("total_steps", [4, 6], ids=["same command", "longer run"])
def test_a_row_cut_off_mid_write_is_dropped_with_a_warning_and_logged_again(
  tmp_path, capsys, caplog, total_steps
):
  run = tmp_path / "run"
  assert run_main(capsys, run, "--config.total_steps=4")[0] == 0
  whole = tmp_path / "whole"
  assert run_main(capsys, whole, f"--config.total_steps={total_steps}")[0] == 0
  metrics = run / "metrics.jsonl"
  cut_last_row(metrics)  # the validation row of step 4, whose evaluation steps.json holds
  line = len(metrics.read_text().splitlines())
  with caplog.at_level(logging.WARNING):
    status, _, err = run_main(capsys, run, f"--config.total_steps={total_steps}")
  assert status == 0, err[-3000:]
  assert caplog.text.count(f"{metrics}: line {line} was cut off mid-write") == 1
  assert rows(run) == rows(whole)  # one row per (step, split), the cut one written again
  cut = json.loads(metrics.read_text().splitlines()[-1])
  assert cut == json.loads((whole / "metrics.jsonl").read_text().splitlines()[-1])


def test_an_unreadable_row_before_the_last_stops_the_run_naming_the_file_and_line(tmp_path, capsys):
  run = tmp_path / "run"
  assert run_main(capsys, run, "--config.total_steps=2")[0] == 0
  metrics = run / "metrics.jsonl"
  lines = metrics.read_text().splitlines(keepends=True)
  metrics.write_text(lines[0] + '{"step": 1, "spl\n' + "".join(lines[1:]))
  status, _, err = run_main(capsys, run, "--config.total_steps=4")
  assert status == 1
  assert err.strip().splitlines()[-1].startswith(f"error: {metrics}, line 2, is unreadable (")
  assert "Traceback" not in err
  assert not (run / workdir.LOCK_FILE).exists()


def test_rows_of_a_metrics_file_against_the_rule(tmp_path):
  good = [json.dumps({"step": s, "split": "train", "loss": 0.5}) + "\n" for s in (1, 2)]
  assert reporting.parse_rows(good, "m") == ([json.loads(x) for x in good], None)
  assert reporting.parse_rows([*good, '{"step": 3, "sp'], "m")[1] == 3
  assert reporting.parse_rows([*good, "\n", "[1, 2]\n"], "m")[1] == 4  # line numbers count blanks
  with pytest.raises(ValueError, match=r"^m, line 1, is unreadable"):
    reporting.parse_rows(['{"split": "train"}\n', *good], "m")


def save_evaluated(directory, evaluated: dict, keep: int = 1) -> None:
  saved = checkpoints.TrainCheckpoints(directory, default.get_config("tiny"), keep=keep)
  writer = reporting.MetricsWriter(directory, enabled=True)
  for step, top1 in evaluated.items():
    saved.save(step, {"w": jnp.arange(4.0) + step}, wait=True)
    saved.record_evaluation(step, {**SCALARS, "top1": top1})
    writer.write(step, "validation", {**SCALARS, "top1": top1})
  saved.close()
  writer.close()


@pytest.mark.parametrize("loss", ["missing", "unreadable"])
def test_the_best_checkpoint_survives_a_lost_steps_file(tmp_path, caplog, loss):
  save_evaluated(tmp_path, {2: 0.9, 4: 0.5, 6: 0.4})  # keep=1: the best (2) and the latest (6)
  steps_file = tmp_path / "checkpoints" / checkpoints.STEPS_FILE
  if loss == "missing":
    steps_file.unlink()
  else:
    steps_file.write_text('{"2": {"digest": "ab')
  writer = reporting.MetricsWriter(tmp_path, enabled=True)
  with caplog.at_level(logging.WARNING):
    again = checkpoints.TrainCheckpoints(
      tmp_path, default.get_config("tiny"), keep=1, evaluation_rows=writer.rows
    )
  warning = caplog.text
  assert f"{steps_file} is {loss}" in warning and "written by an older version" not in warning
  assert "rebuilt from metrics.jsonl for [2, 6]" in warning
  assert again.evaluations[2]["top1"] == 0.9
  again.save(8, {"w": jnp.arange(4.0) + 8}, wait=True)
  assert again.steps() == [2, 8]  # the best kept, the older latest let go
  again.close()
  assert json.loads(steps_file.read_text())["2"]["evaluation"]["top1"] == 0.9  # written again


def test_checkpoints_whose_evaluation_is_unknown_are_kept(tmp_path, caplog):
  save_evaluated(tmp_path, {2: 0.9, 4: 0.5, 6: 0.4})
  (tmp_path / "checkpoints" / checkpoints.STEPS_FILE).unlink()
  (tmp_path / "metrics.jsonl").unlink()  # nothing to rebuild the evaluations from
  with caplog.at_level(logging.WARNING):
    again = checkpoints.TrainCheckpoints(tmp_path, default.get_config("tiny"), keep=1)
  assert "[2, 6], whose evaluation is unknown, are kept" in caplog.text
  for step in (8, 10):
    again.save(step, {"w": jnp.arange(4.0) + step}, wait=True)
  assert again.steps() == [2, 6, 10]
  again.close()


CONFIG_FILES = {
  "syntax": ("def get_config(:\n  pass\n", 1, "SyntaxError: invalid syntax"),
  "import": (
    "import no_such_module\n\ndef get_config():\n  pass\n",
    1,
    "ModuleNotFoundError: No module named 'no_such_module'",
  ),
  "name": (
    "from configs import default\n\ndef get_config(arg=None):\n"
    "  config = default.get_config('tiny')\n"
    "  config.batch_size = undefined\n  return config\n",
    5,
    "NameError: name 'undefined' is not defined",
  ),
  "raises": (
    "def get_config(arg=None):\n  return {}[arg]\n",
    2,
    "KeyError: 'x'",
  ),
}


@pytest.mark.parametrize("kind", CONFIG_FILES)
def test_a_config_file_that_fails_to_load_is_one_line_naming_its_line(tmp_path, capsys, kind):
  text, line, error = CONFIG_FILES[kind]
  path = tmp_path / f"{kind}.py"
  path.write_text(text)
  capsys.readouterr()
  status = main.main(["main.py", f"--config={path}:x", f"--workdir={tmp_path / 'run'}"])
  err = capsys.readouterr().err
  assert status == 2
  assert err.strip().splitlines() == [f"error: {path}, line {line}: {error}"]
  assert not (tmp_path / "run").exists()


def test_a_config_file_without_get_config_is_named(tmp_path, capsys):
  path = tmp_path / "empty.py"
  path.write_text("settings = {}\n")
  capsys.readouterr()
  assert main.main(["main.py", f"--config={path}", f"--workdir={tmp_path / 'run'}"]) == 2
  assert capsys.readouterr().err.strip() == (
    f"error: {path} defines no get_config(arg=None) function"
  )


@pytest.mark.parametrize(
  "override",
  [
    "input.num_frames=0",
    "input.image_size=0",
    "input.eval_clips=0",
    "input.resize_hw=(0,32)",
    "input.eval_crops=2",
    "input.randaugment_ops=-1",
    "optimizer.base_batch_size=0",
    "optimizer.warmup_steps=-1",
    "optimizer.learning_rate=0.0",
    "dataset.num_eval=0",
    "model.width=0",
    "model.shift_div=0",
    "model.selfy.hidden=0",
  ],
)
def test_a_size_or_divisor_out_of_range_is_one_line_naming_the_key(tmp_path, capsys, override):
  status, _, err = run_main(capsys, tmp_path / "run", f"--config.{override}")
  key = override.split("=")[0]
  assert status == 1, err[-2000:]
  (line,) = [x for x in err.strip().splitlines() if x.startswith("error:")]
  assert line.startswith(f"error: config.{key} = "), err[-2000:]
  assert "Traceback" not in err and err.strip().splitlines()[-1] == line


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
  """The tiny config's four steps, uninterrupted: what every interrupted run must end with."""
  workdir_path = tmp_path_factory.mktemp("whole") / "run"
  assert main.main(["main.py", TINY, f"--workdir={workdir_path}"]) == 0
  return workdir_path


def signal_self_in(monkeypatch, owner, name: str, calls: int = 1, number=signal.SIGTERM):
  """Makes the `calls`-th call of owner.name send this process `number` before it does its work."""
  original = getattr(owner, name)
  seen = []

  def sends_then_runs(*args, **kwargs):
    seen.append(1)
    if len(seen) == calls:
      os.kill(os.getpid(), number)
    return original(*args, **kwargs)

  monkeypatch.setattr(owner, name, sends_then_runs)


MOMENTS = {
  # moment: (what to patch, which call, the moment the message names)
  "flag parsing": (lambda: (cli, "bundled_configs"), 1, "start-up"),
  "building the data source": (lambda: (sources, "build_source"), 1, "start-up"),
  "tracing the train step": (lambda: (steps, "make_train_step"), 1, "start-up"),
  "the first evaluation": (lambda: (loop.Trainer, "evaluate"), 1, "the evaluation of step 2"),
  "the last evaluation": (lambda: (loop.Trainer, "evaluate"), 2, "the evaluation of step 4"),
  "the export": (lambda: (model_dir, "replace"), 1, "the export of "),
}


@pytest.mark.parametrize(
  "moment,number",
  [(moment, signal.SIGTERM) for moment in MOMENTS]
  + [("building the data source", signal.SIGINT), ("the first evaluation", signal.SIGINT)],
)
def test_a_signal_outside_a_training_step_exits_0_and_the_rerun_finishes_the_job(
  tmp_path, capsys, monkeypatch, whole_run, moment, number
):
  target, calls, named = MOMENTS[moment]
  run = tmp_path / "run"
  with monkeypatch.context() as patch:
    signal_self_in(patch, *target(), calls=calls, number=number)
    status, _, err = run_main(capsys, run)
  assert status == 0, err[-3000:]
  name = signal.Signals(number).name
  assert err.strip().splitlines()[-1].startswith(f"stopped by {name} during {named}"), err[-2000:]
  assert not (run / workdir.LOCK_FILE).exists()
  assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # in-process callers get theirs back
  status, out, err = run_main(capsys, run)
  assert status == 0 and "validation: top-1" in out, err[-3000:]
  assert_same_end(run, whole_run, 4)
  assert (run / "model" / model_dir.CONFIG_FILE).is_file()


def test_a_signal_while_a_checkpoint_is_restored_does_not_mark_it_damaged(
  tmp_path, capsys, monkeypatch, whole_run
):
  run = tmp_path / "run"
  assert run_main(capsys, run, "--config.total_steps=2")[0] == 0
  with monkeypatch.context() as patch:
    signal_self_in(patch, checkpoints.TrainCheckpoints, "restore")
    status, _, err = run_main(capsys, run)
  assert status == 0 and "stopped by SIGTERM during start-up" in err, err[-3000:]
  assert not (run / "checkpoints" / "damaged").exists()
  assert run_main(capsys, run)[0] == 0
  assert_same_end(run, whole_run, 4)
