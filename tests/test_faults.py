"""Faults at unlucky moments: a metrics row cut off mid-write, a lost checkpoint record, a broken
config file, a signal outside the training loop, odd lock files. Each loses no work, and a
command that cannot go on ends with one line that names the culprit."""

import json
import logging
import os
import pathlib
import re
import resource
import signal
import subprocess
import sys
import threading
import time

import jax.numpy as jnp
import numpy as np
import pytest

import main
from configs import default
from input_pipeline import sources
from stss_jax import cli, model_dir
from stss_jax.train import checkpoints, loop, reporting, steps, workdir
from tests import conftest
from tests.test_train import ROOT, TINY, assert_same_end, kept_steps, main_process, rows, run_main
from tests.test_workdir import truncate

SCALARS = {"loss": 1.0, "top5": 1.0, "mean_class_accuracy": 0.5}


def cut_last_row(path: pathlib.Path) -> str:
  """Cuts metrics.jsonl's last row in the middle, as a kill during its append leaves it."""
  lines = path.read_text().splitlines(keepends=True)
  last = lines[-1]
  path.write_text("".join(lines[:-1]) + last[: len(last) // 2])
  return last


@pytest.fixture(scope="module")
def six_steps(tmp_path_factory):
  """The tiny config's run to step 6, uninterrupted (evaluated at 2, 4 and 6)."""
  workdir = tmp_path_factory.mktemp("six") / "run"
  assert main.main(["main.py", TINY, f"--workdir={workdir}", "--config.total_steps=6"]) == 0
  return workdir


def test_a_row_cut_off_mid_write_is_dropped_with_a_warning_and_logged_again(
  tmp_path, capsys, caplog, six_steps
):
  run = tmp_path / "run"
  assert run_main(capsys, run, "--config.total_steps=4")[0] == 0
  metrics = run / "metrics.jsonl"
  written = metrics.read_text()
  cut_last_row(metrics)  # the validation row of step 4, whose evaluation steps.json holds
  line = len(metrics.read_text().splitlines())
  with caplog.at_level(logging.WARNING):
    status, _, err = run_main(capsys, run, "--config.total_steps=4")  # the same command
  assert status == 0, err[-3000:]
  assert caplog.text.count(f"{metrics}: line {line} was cut off mid-write") == 1
  assert metrics.read_text() == written  # the cut row written again, values and all
  cut_last_row(metrics)
  assert run_main(capsys, run, "--config.total_steps=6")[0] == 0  # a longer run
  assert rows(run) == rows(six_steps)  # one row per (step, split)


@pytest.mark.parametrize("lost", [("train",), ("train", "validation")], ids=["train", "both"])
def test_rows_of_the_restored_step_that_were_lost_are_written_again(
  tmp_path, capsys, lost, six_steps
):
  """A bucket's metrics.jsonl is uploaded after the checkpoint starts: a run killed in between
  leaves the checkpoint of step 4 without its rows."""
  run, whole = tmp_path / "run", six_steps
  assert run_main(capsys, run, "--config.total_steps=4")[0] == 0
  metrics = run / "metrics.jsonl"
  written = [json.loads(line) for line in metrics.read_text().splitlines()]
  metrics.write_text(
    "".join(
      json.dumps(r) + "\n"
      for r in written
      if (r["step"], r["split"]) not in {(4, split) for split in lost}
    )
  )
  assert run_main(capsys, run, "--config.total_steps=6")[0] == 0
  assert rows(run) == rows(whole)
  again = [json.loads(line) for line in metrics.read_text().splitlines()]
  assert [r for r in again if r["step"] <= 4] == written  # the very rows, values and all


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
  "taking the workdir's lock": (lambda: (workdir.WorkdirLock, "acquire"), 1, "start-up"),
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


def output_lines(text: str) -> int:
  """Lines as a terminal shows them at the end (a progress bar redrawn with \\r is one)."""
  return len(text.rstrip("\n").split("\n"))


def _never_retrieved_reports(caplog, module) -> list[str]:
  """asyncio's reports of a task and of a gathering that failed in `module` and were dropped."""
  import asyncio
  import gc

  async def drop_failures():
    task = asyncio.ensure_future(module.fail())
    gathering = asyncio.gather(module.fail())
    await asyncio.sleep(0.01)
    del task, gathering
    gc.collect()

  caplog.clear()
  with caplog.at_level(logging.ERROR, logger="asyncio"):
    asyncio.run(drop_failures())
  return [r.getMessage().split("\n")[0] for r in caplog.records if r.name == "asyncio"]


def test_orbax_failures_never_retrieved_are_dropped_and_others_still_reported(tmp_path, caplog):
  import importlib.util

  def failing_module(package):
    path = tmp_path / package / "failing.py"
    path.parent.mkdir()
    path.write_text("async def fail():\n  raise ValueError('OUT_OF_RANGE: File too large')\n")
    spec = importlib.util.spec_from_file_location(f"failing_in_{package}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

  orbax_like, elsewhere = failing_module("orbax"), failing_module("elsewhere")
  cli.quiet_background_noise()
  assert _never_retrieved_reports(caplog, orbax_like) == []
  assert sorted(_never_retrieved_reports(caplog, elsewhere)) == [
    "Task exception was never retrieved",
    "_GatheringFuture exception was never retrieved",
  ]


@pytest.mark.slow  # processes whose own output is what is tested
def test_when_every_checkpoint_is_damaged_the_error_is_the_last_of_few_lines(tmp_path):
  run = tmp_path / "run"
  assert main_process(run).wait(timeout=900) == 0
  for step in ("2", "4"):
    truncate(run / "checkpoints" / step)
  again = main_process(run)
  _, err = again.communicate(timeout=900)
  assert again.returncode == 1
  assert err.strip().split("\n")[-1].startswith(f"error: no usable checkpoint in {run}")
  assert output_lines(err) <= 20 and "Event loop is closed" not in err, err[-3000:]


@pytest.mark.slow  # a file-size limit on a process of its own
def test_a_full_disk_is_one_last_line_and_the_rerun_finishes(tmp_path):
  run, whole = tmp_path / "run", tmp_path / "whole"
  assert main_process(whole).wait(timeout=900) == 0  # one device, as the processes below

  def small_files():
    resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

  full = main_process(run, preexec_fn=small_files)
  _, err = full.communicate(timeout=900)
  assert full.returncode == 1
  last = err.strip().split("\n")[-1]
  assert last.startswith("error: ") and "File too large" in last, err[-3000:]
  assert output_lines(err) <= 20 and "Event loop is closed" not in err, err[-3000:]
  assert not (run / workdir.LOCK_FILE).exists()
  rerun = main_process(run)
  assert rerun.wait(timeout=900) == 0, rerun.stderr.read()[-3000:]
  assert_same_end(run, whole, 4)


class Timeline:
  """What a process prints on stdout (stderr joined to it), with the time each piece arrived."""

  def __init__(self, process):
    self.start = time.monotonic()
    self.events: list[tuple[float, str]] = []
    self.thread = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
    self.thread.start()

  def _read(self, stream) -> None:
    for chunk in iter(lambda: os.read(stream.fileno(), 4096), b""):
      self.events.append((time.monotonic() - self.start, chunk.decode(errors="replace")))

  def text(self) -> str:
    self.thread.join(timeout=60)
    return "".join(chunk for _, chunk in self.events)

  def first(self, marker: str) -> float | None:
    """Seconds from the start until `marker` was printed, or None if it was not (yet)."""
    seen = ""
    for at, chunk in list(self.events):
      seen += chunk
      if marker in seen:
        return at
    return None

  def wait_for(self, marker: str, process) -> float:
    """Waits until `marker` is printed (or the process ends); returns the time it was printed."""
    while self.first(marker) is None and process.poll() is None:
      time.sleep(0.01)
    return self.first(marker) or time.monotonic() - self.start


def combined_process(workdir, *overrides):
  """main.py in a process of its own, one device, stdout and stderr in one stream."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=conftest.xla_flags(1))
  return subprocess.Popen(
    [sys.executable, "main.py", TINY, f"--workdir={workdir}", *overrides],
    cwd=ROOT,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
  )


SOAK_STEPS = ["--config.total_steps=6"]
FAULTS = ("kill -9", "SIGTERM", "torn metrics row")


def moment_hit(text: str) -> str:
  """Where an interrupted run was, by what it printed last."""
  if "stopped by" in text:
    return text.split("stopped by ")[1].split(". Rerun")[0]
  if "validation: top-1" in text:
    return "after its end"
  evaluated = re.findall(r"step (\d+): validation", text)
  stepped = re.findall(r"(\d+)/6 \[", text)
  if not stepped:
    return "start-up"
  where = f"training, at step {max(map(int, stepped))} of 6"
  return where + (f", step {evaluated[-1]} evaluated" if evaluated else "")


@pytest.mark.slow  # processes killed at random moments, each rerun to completion
@pytest.mark.parametrize("part", range(4))
def test_fault_soak_every_fault_at_any_moment_ends_as_an_uninterrupted_run(tmp_path, part):
  """Five trials per part (twenty in all): a fault of a random kind at a random moment of a run,
  then a rerun to completion, which must end as the uninterrupted run did. STSS_JAX_SOAK_SEED
  replays one seed; the seed and each trial's moment are printed."""
  seed = int(os.environ.get("STSS_JAX_SOAK_SEED", time.time_ns() % 2**31)) + part
  rng = np.random.default_rng(seed)
  whole = tmp_path / "whole"
  reference = combined_process(whole, *SOAK_STEPS)
  timeline = Timeline(reference)
  assert reference.wait(timeout=900) == 0, timeline.text()[-3000:]
  timeline.text()
  marks = ["process(es)", "1/6 [", "step 6: validation"]
  times = [timeline.first(mark) for mark in marks] + [timeline.events[-1][0]]
  # Each phase starts at a line the run prints; a trial waits for it, then for a random part
  # of the phase's length in the uninterrupted run.
  phases = {
    name: (mark, later - earlier)
    for name, mark, earlier, later in zip(
      ("start-up", "training", "the end"), marks, times[:-1], times[1:], strict=True
    )
  }
  print(f"fault soak part {part}: seed {seed} (STSS_JAX_SOAK_SEED={seed - part} replays)")
  for trial in range(5):
    fault = FAULTS[rng.integers(len(FAULTS))]
    phase = list(phases)[rng.integers(len(phases))]
    mark, length = phases[phase]
    after = float(rng.uniform(0, length))
    run = tmp_path / f"trial{trial}"
    interrupted = combined_process(run, *SOAK_STEPS)
    output = Timeline(interrupted)
    seen = output.wait_for(mark, interrupted)
    time.sleep(max(0.0, seen + after - (time.monotonic() - output.start)))
    interrupted.send_signal(signal.SIGTERM if fault == "SIGTERM" else signal.SIGKILL)
    status = interrupted.wait(timeout=900)
    text = output.text()
    delay = seen + after
    if fault == "SIGTERM":
      assert status == 0, text[-3000:]
    metrics = run / "metrics.jsonl"
    if fault == "torn metrics row" and metrics.is_file() and metrics.read_text().strip():
      cut_last_row(metrics)
    hit = moment_hit(text)
    print(
      f"  trial {trial}: {fault} {after:.2f} s after {mark!r} ({phase}), hit {hit}, exit {status}"
    )
    rerun = main_process(run, *SOAK_STEPS)
    _, err = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, f"trial {trial}: {fault} at {delay:.2f} s\n{err[-3000:]}"
    assert_same_end(run, whole, 6)
    assert kept_steps(run) == kept_steps(whole)  # the best checkpoint among them
    assert not (run / workdir.LOCK_FILE).exists()
