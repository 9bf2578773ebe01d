"""A run's directory: writable, and owned by one run at a time.

The owner holds WORKDIR/lock.json (host, pid, start time, and when it was last known alive, which a
thread refreshes every `heartbeat_s`). A second run into the same workdir stops at once and
names the owner. A lock whose owner is gone is taken over: at once when the owner ran on this
host and its process no longer exists, and after `stale_after_s` without a refresh when it ran on
another host (a preempted VM, say).

A workdir in a bucket (gs://) holds the same lock as an object, and every write of it is
conditional on the object's generation (the number GCS gives each version of an object): a run
creates it only where there is none, refreshes it only while it is the version this run wrote,
takes a stale one over only as the version it read, and deletes only its own. Of runs racing for a
lock exactly one wins, and a run whose lock was taken over learns so at its next refresh, before
it writes over the other's work.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import threading
import time
import uuid

from absl import logging
from etils import epath

from stss_jax import storage

LOCK_FILE = "lock.json"
# An unreadable lock younger than this may be one that its owner is writing (a bucket, or a file
# system without hard links); older ones are stale.
TORN_LOCK_GRACE_S = 10.0


class WorkdirBusyError(FileExistsError):
  """Another run owns the workdir."""


def writable_directory(path: epath.Path, name: str) -> epath.Path:
  """`path`, created and probed with a write, or an error naming it (`name`) and the reason."""
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = (
      path / f".write_probe.{socket.gethostname()}.{os.getpid()}"
    )  # one per process: hosts may share it
    probe.write_text("")
    probe.unlink()
  except OSError as e:
    raise ValueError(f"{name} is not writable: {e.strerror or e}") from e
  except Exception as e:  # noqa: BLE001  cloud clients raise their own kinds (credentials, HTTP)
    raise ValueError(f"{name} is not writable: {type(e).__name__}: {e}") from e
  return path


def prepare(workdir: str | os.PathLike) -> epath.Path:
  """The workdir (a local or mounted directory, made absolute, or a gs:// folder), created, or an
  error saying why it cannot be written."""
  if bucket := storage.missing_bucket(workdir):
    raise ValueError(
      f"--workdir {workdir}: the bucket {bucket} does not exist (or these credentials cannot see "
      "it)"
    )
  path = storage.path(workdir)
  return writable_directory(path, f"--workdir {path}")


def _now() -> float:
  return time.time()


def _utc(timestamp: float) -> str:
  return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).strftime(
    "%Y-%m-%d %H:%M:%S UTC"
  )


def _process_exists(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process
    return True
  return True


class WorkdirLock:
  """The lock of one workdir; `with WorkdirLock(path):` owns it for the block."""

  def __init__(
    self, workdir: str | os.PathLike, heartbeat_s: float = 30.0, stale_after_s: float = 300.0
  ):
    self.path = storage.path(workdir) / LOCK_FILE
    self.local = storage.is_local(self.path)
    self.heartbeat_s = heartbeat_s
    self.stale_after_s = stale_after_s
    self.token = uuid.uuid4().hex
    self.record = {
      "token": self.token,
      "host": socket.gethostname(),
      "pid": os.getpid(),
      "started": _now(),
    }
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None
    self.lost = False  # set when another run took the lock over (this one hung past stale_after_s)
    self.generation = "0"  # in a bucket: the generation of this run's last write of the lock

  def __enter__(self) -> WorkdirLock:
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()

  def holder(self) -> dict | None:
    """The lock's record, or None when there is no lock. Its `alive` is when its owner was last
    known alive: the file's modification time when the record has none, or one in the future
    (another host's clock). A torn or foreign file is {"written": its modification time}."""
    return self._read()[0]

  def _read(self) -> tuple[dict | None, str | None]:
    """The lock's record (as `holder` gives it) and, in a bucket, the generation it was read at."""
    generation = None
    if self.local:
      try:
        text = self.path.read_text()
      except FileNotFoundError:
        return None, None
      except OSError:
        text = ""
    else:
      read = storage.read_object(self.path)
      if read is None:
        return None, None
      text, generation = read[0].decode(errors="replace"), read[1]
    try:
      record = json.loads(text)
    except ValueError:
      record = None
    # The file's time costs a request in a bucket: asked only for a lock that needs it.
    if not (isinstance(record, dict) and {"host", "pid", "started"} <= record.keys()):
      return {"written": self._written()}, generation
    alive = record.get("alive")
    if not isinstance(alive, (int, float)) or alive > _now():
      record["alive"] = self._written()
    return record, generation

  def _written(self) -> float:
    """When the lock file was last written, by the file system's clock (now if unknown)."""
    try:
      return float(self.path.stat().mtime)
    except Exception:  # noqa: BLE001  cloud clients raise their own kinds; now is the safe answer
      return _now()

  def describe(self, record: dict) -> str:
    if "host" not in record:
      age = max(0, _now() - record["written"])
      return f"a lock file being written {age:.0f} s ago (unreadable)"
    return (
      f"pid {record['pid']} on host {record['host']}, started {_utc(record['started'])}, "
      f"last alive {max(0, _now() - record['alive']):.0f} s ago"
    )

  def is_stale(self, record: dict) -> bool:
    if "host" not in record:  # torn or foreign: stale once it is not a lock being written now
      return _now() - record["written"] > TORN_LOCK_GRACE_S
    if record["host"] == socket.gethostname() and not _process_exists(int(record["pid"])):
      return True
    return _now() - record["alive"] > self.stale_after_s

  def acquire(self) -> None:
    for _ in range(3):  # a race with another run taking over the same stale lock is retried
      record, generation = self._read()
      if record is not None:
        if not self.is_stale(record):
          raise WorkdirBusyError(
            f"--workdir {self.path.parent} is in use by the run of {self.describe(record)}; wait "
            f"for it to end or use another --workdir (a lock not refreshed for "
            f"{self.stale_after_s:.0f} s is taken over)"
          )
        if not self._take_over(generation):
          continue
        logging.warning("took over the stale lock of %s", self.describe(record))
      elif not self._create():
        continue
      self._thread = threading.Thread(target=self._heartbeat, name="workdir-lock", daemon=True)
      self._thread.start()
      return
    raise WorkdirBusyError(
      f"--workdir {self.path.parent}: other runs keep taking its lock; use another --workdir"
    )

  def _text(self) -> str:
    return json.dumps({**self.record, "alive": _now()})

  def _write_object(self, if_generation: str) -> bool:
    """Writes this run's lock into the bucket if the object is at `if_generation` ("0": none)."""
    generation = storage.write_object(self.path, self._text().encode(), if_generation)
    if generation is None:
      return False
    self.generation = generation
    return True

  def _create(self) -> bool:
    """Writes this run's lock where there is none; False when another run's lock is there."""
    if not self.local:
      return self._write_object("0")
    # Written whole under a name of its own, then linked into place: the link fails if a lock
    # exists, and no reader ever sees the lock empty or half written.
    temporary = self.path.with_name(f"{LOCK_FILE}.{self.token}.new")
    temporary.write_text(self._text())
    try:
      os.link(temporary, self.path)
    except FileExistsError:
      return False
    finally:
      temporary.unlink()
    return True

  def _take_over(self, generation: str | None) -> bool:
    """Replaces the stale lock that was read (in a bucket, at `generation`) with this run's;
    False when another run changed or removed it first."""
    if not self.local:
      return self._write_object(generation)
    stale = self.path.with_name(f"{LOCK_FILE}.stale.{self.token}")
    try:
      os.replace(self.path, stale)  # only one of several takers moves a given file
    except FileNotFoundError:
      return False
    stale.unlink(missing_ok=True)
    return self._create()

  def _owned(self) -> bool:
    record = self.holder()
    return bool(record) and record.get("token") == self.token

  def _refresh(self) -> bool:
    """Rewrites this run's lock with the time now; False when it is no longer this run's."""
    if self.local:
      if not self._owned():
        return False
      temporary = self.path.with_name(f"{LOCK_FILE}.{self.token}.tmp")
      temporary.write_text(self._text())
      os.replace(temporary, self.path)
      return True
    if self._write_object(self.generation):
      return True
    # A retried upload whose first try had landed fails its condition on this run's own write.
    record, generation = self._read()
    if record and record.get("token") == self.token:
      self.generation = generation
      return self._write_object(generation)
    return False

  def _heartbeat(self) -> None:
    while not self._stop.wait(self.heartbeat_s):
      if not self._refresh():
        self.lost = True
        logging.error("the lock %s was taken over by another run", self.path)
        return

  def check(self) -> None:
    """Raises if another run took the lock over, before this run writes over its work."""
    if self.lost or (self._thread is not None and not self._owned()):
      self.lost = True
      record = self.holder()
      other = self.describe(record) if record else "its lock is gone"
      raise WorkdirBusyError(
        f"--workdir {self.path.parent} was taken over by another run ({other}); stopping"
      )

  def release(self) -> None:
    if self._thread is None:
      return
    self._stop.set()
    self._thread.join()
    self._thread = None
    if not self.local:
      storage.delete_object(self.path, self.generation)  # not another run's lock
    elif self._owned():
      self.path.unlink(missing_ok=True)
