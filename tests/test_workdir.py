"""What keeps a run's work: the workdir lock, keep-best across restarts, one metrics row per (step,
split)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import main
from configs import default
from stss_jax.train import checkpoints, loop, preemption, reporting, workdir

TINY = "--config=configs/default.py:tiny"


def lock_record(alive_ago: float = 0.0, **fields):
  """A lock file's record, timed from now (not from when the tests were collected)."""
  return {
    "token": "other",
    "host": socket.gethostname(),
    "pid": os.getpid(),
    "started": time.time() - 60,
    "alive": time.time() - alive_ago,
    **fields,
  }


def dead_pid() -> int:
  process = subprocess.Popen([sys.executable, "-c", "pass"])
  process.wait()
  return process.pid


def test_a_busy_workdir_stops_a_second_run_at_once_naming_the_first(tmp_path, capsys):
  with workdir.WorkdirLock(workdir.prepare(tmp_path / "run")) as held:
    status = main.main(["main.py", TINY, f"--workdir={tmp_path / 'run'}"])
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert status == 1
    assert line.startswith(
      f"error: --workdir {tmp_path / 'run'} is in use by the run of pid {os.getpid()} on host "
      f"{socket.gethostname()}, started "
    )
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before anything was written
    assert json.loads(held.path.read_text())["token"] == held.token
  assert not held.path.exists()  # given up at the end of the block


@pytest.mark.parametrize(
  "fields,stale",
  [
    ({}, False),  # this very process: alive
    ({"pid": None}, True),  # a run of this host whose process is gone (pid filled in below)
    ({"host": "elsewhere", "alive_ago": 3600}, True),  # another host, silent for an hour
    ({"host": "elsewhere", "alive_ago": 10}, False),  # another host, alive recently
    ({"host": "elsewhere", "alive": None}, False),  # another host, no alive: written just now
    ({"host": "elsewhere", "alive": None, "written_ago": 3600}, True),  # ... written an hour ago
    ({"host": "elsewhere", "alive_ago": -3600}, False),  # alive in the future: as of its writing
    ({"host": "elsewhere", "alive_ago": -3600, "written_ago": 3600}, True),
    ({"torn": True, "written_ago": 3600}, True),  # a torn file, left by a crash long ago
    ({"torn": True}, False),  # a torn file just written: perhaps its owner is writing it
  ],
)
def test_a_stale_lock_is_taken_over_and_a_live_one_is_not(tmp_path, fields, stale):
  fields = dict(fields)
  written_ago = fields.pop("written_ago", 0)
  if fields.pop("torn", False):
    record = {"half": "written"}
  else:
    record = lock_record(**fields)
    if record["pid"] is None:
      record["pid"] = dead_pid()
    if record["alive"] is None:
      del record["alive"]
  path = tmp_path / workdir.LOCK_FILE
  path.write_text(json.dumps(record))
  os.utime(path, (time.time() - written_ago,) * 2)
  lock = workdir.WorkdirLock(tmp_path)
  if not stale:
    owner = f"pid {record['pid']} on host" if "pid" in record else "a lock file being written"
    with pytest.raises(workdir.WorkdirBusyError, match=f"in use by the run of {owner}"):
      lock.acquire()
    assert json.loads((tmp_path / workdir.LOCK_FILE).read_text()) == record
    return
  with lock:
    assert json.loads((tmp_path / workdir.LOCK_FILE).read_text())["token"] == lock.token
  assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_lock_is_refreshed_and_a_takeover_is_noticed(tmp_path):
  with workdir.WorkdirLock(tmp_path, heartbeat_s=0.05) as lock:
    first = json.loads(lock.path.read_text())["alive"]
    time.sleep(0.3)
    assert json.loads(lock.path.read_text())["alive"] > first
    lock.check()
    lock.path.write_text(json.dumps(lock_record(token="thief", host="elsewhere")))
    time.sleep(0.3)
    with pytest.raises(
      workdir.WorkdirBusyError, match="was taken over by another run .pid .* on host elsewhere"
    ):
      lock.check()
  assert json.loads(lock.path.read_text())["token"] == "thief"  # not removed: it is not ours


def test_the_trainer_holds_the_lock_while_it_lives(tmp_path):
  config = default.get_config("tiny")
  with loop.Trainer(config, str(tmp_path), devices=jax.devices()[:1]):
    assert json.loads((tmp_path / workdir.LOCK_FILE).read_text())["pid"] == os.getpid()
    with pytest.raises(workdir.WorkdirBusyError):
      loop.Trainer(config, str(tmp_path), devices=jax.devices()[:1])
  assert not (tmp_path / workdir.LOCK_FILE).exists()


def test_keep_best_survives_a_restart(tmp_path):
  config = default.get_config("tiny")
  state = {"w": jnp.arange(4.0)}
  first = checkpoints.TrainCheckpoints(tmp_path, config, keep=1)
  for step, top1 in ((2, 0.9), (4, 0.5)):
    first.save(step, {"w": state["w"] + step}, wait=True)
    first.record_evaluation(step, {"loss": 1.0, "top1": top1, "top5": 1.0})
  first.close()  # the process ends; a new one resumes
  second = checkpoints.TrainCheckpoints(tmp_path, config, keep=1)
  assert second.evaluations[2]["top1"] == 0.9
  for step, top1 in ((6, 0.4), (8, None)):
    second.save(step, {"w": state["w"] + step}, wait=True)
    if top1 is not None:
      second.record_evaluation(step, {"loss": 1.0, "top1": top1, "top5": 1.0})
  second.close()
  third = checkpoints.TrainCheckpoints(tmp_path, config, keep=1)
  assert third.steps() == [2, 8]  # the best (step 2, top-1 0.9) and the latest
  np.testing.assert_array_equal(third.restore(state, 2)["w"], state["w"] + 2)
  third.close()


@pytest.mark.parametrize(
  "steps,evaluated,keep,best",
  [
    ([2, 4, 6, 8], {2: 0.5, 4: 0.7, 6: 0.7, 8: 0.1}, 1, 4),  # equal top-1s: the earlier
    ([2, 4, 6, 8], {}, 2, None),
    ([2, 4, 6, 8], {8: 0.3, 6: 0.2}, 3, 8),
  ],
)
def test_latest_and_best_policy_against_the_rule(steps, evaluated, keep, best):
  infos = [type("Info", (), {"step": s})() for s in steps]
  preserved = checkpoints.LatestAndBest(keep, evaluated.get).should_preserve(infos, context=None)
  expected = {s for s in steps[-keep:]} | ({best} if best is not None else set())
  assert [s for s, p in zip(steps, preserved) if p] == sorted(expected)


def test_metrics_rows_past_a_point_are_dropped(tmp_path):
  writer = reporting.MetricsWriter(tmp_path, enabled=True)
  for step in (1, 2, 3):
    writer.write(step, "train", {"loss": float(step)})
  writer.write(2, "validation", {"top1": 0.5})
  writer.keep_rows(lambda row: row["step"] < 2 or (row["step"] == 2 and row["split"] == "train"))
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [(r["step"], r["split"]) for r in rows] == [(1, "train"), (2, "train")]


def test_an_unwritable_checkpoint_folder_is_one_line(tmp_path, capsys):
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "checkpoints").write_text("a file where the folder goes")
  status = main.main(["main.py", TINY, f"--workdir={tmp_path / 'run'}"])
  err = capsys.readouterr().err.strip().splitlines()
  assert (
    status == 1
    and err[-1] == f"error: {tmp_path / 'run' / 'checkpoints'} is not writable: File exists"
  )
  assert not (tmp_path / "run" / workdir.LOCK_FILE).exists()  # a refused run leaves no lock behind


def test_a_signal_is_recorded_once_and_the_handlers_are_restored():
  before = {number: signal.getsignal(number) for number in preemption.SIGNALS}
  with preemption.StopRequests() as stop:
    assert not stop.requested(1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.requested(2) and stop.signal_name == "SIGTERM"
    assert (
      signal.getsignal(signal.SIGTERM) == before[signal.SIGTERM]
    )  # a second SIGTERM is not caught
    assert signal.getsignal(signal.SIGINT) != before[signal.SIGINT]
  assert {number: signal.getsignal(number) for number in preemption.SIGNALS} == before


def test_a_negative_checkpoint_interval_is_refused(tmp_path, capsys):
  status = main.main(
    ["main.py", TINY, f"--workdir={tmp_path}", "--config.checkpoint_every_minutes=-1"]
  )
  assert status == 1
  assert (
    capsys.readouterr()
    .err.strip()
    .endswith("config.checkpoint_every_minutes = -1.0 must be >= 0 (0: off)")
  )


def largest_file(folder):
  return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def flip_bytes(folder):
  path = largest_file(folder)
  data = bytearray(path.read_bytes())
  for i in range(len(data) // 3, len(data) // 3 + 8):
    data[i] ^= 0xFF
  path.write_bytes(bytes(data))


def truncate(folder):
  path = largest_file(folder)
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def lose_a_file(folder):
  largest_file(folder).unlink()


def garble_metadata(folder):
  (folder / "default" / "_METADATA").write_bytes(b"\x9a\x00not json")


def swap_in_other_arrays(folder):
  """Another step's files under this step's name: every file loads, the numbers are wrong."""
  shutil.rmtree(folder / "default")
  shutil.copytree(folder.parent / "2" / "default", folder / "default")


@pytest.mark.parametrize(
  "damage", [flip_bytes, truncate, lose_a_file, garble_metadata, swap_in_other_arrays]
)
def test_a_damaged_checkpoint_is_set_aside_and_the_one_before_restored(tmp_path, damage):
  config = default.get_config("tiny")
  state = {
    "w": jnp.arange(3000.0),
    "b": {"count": jnp.int32(0), "scale": jnp.ones((40, 40), jnp.bfloat16)},
  }
  saved = checkpoints.TrainCheckpoints(tmp_path, config, keep=2)
  for step in (2, 4):
    saved.save(step, jax.tree.map(lambda x: x + step, state), wait=True)  # noqa: B023
  saved.close()
  damage(tmp_path / "checkpoints" / "4")
  again = checkpoints.TrainCheckpoints(tmp_path, config, keep=2)
  step, restored, damaged = again.restore_latest(state)
  assert step == 2 and len(damaged) == 1 and damaged[0].startswith("step 4: ")
  for a, b in zip(
    jax.tree.leaves(restored), jax.tree.leaves(jax.tree.map(lambda x: x + 2, state)), strict=True
  ):
    np.testing.assert_array_equal(a, b)
  assert (tmp_path / "checkpoints" / "damaged" / "4").is_dir() and again.steps() == [2]
  again.save(4, jax.tree.map(lambda x: x + 4, state), wait=True)  # the step can be written again
  again.close()


def test_no_good_checkpoint_left_is_one_line_naming_each(tmp_path):
  config = default.get_config("tiny")
  state = {"w": jnp.arange(10.0)}
  saved = checkpoints.TrainCheckpoints(tmp_path, config, keep=2)
  for step in (2, 4):
    saved.save(step, {"w": state["w"] + step}, wait=True)
  saved.close()
  garble_metadata(tmp_path / "checkpoints" / "4")
  garble_metadata(tmp_path / "checkpoints" / "2")
  with pytest.raises(
    checkpoints.NoGoodCheckpointError,
    match=r"no usable checkpoint in .*checkpoints \(step 4: .*; "
    r"step 2: .*\); the damaged ones are in .*damaged",
  ) as e:
    checkpoints.TrainCheckpoints(tmp_path, config, keep=2).restore_latest(state)
  assert "\n" not in str(e.value)
