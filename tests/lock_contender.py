"""One run's side of the workdir-lock races in tests/test_storage.py, in a process of its own.

  python -m tests.lock_contender WORKDIR

Reads commands from stdin, one per line, and answers each with one JSON line on stdout:
  go T      at Unix time T, takes the lock: {"acquired": true, "token", "pid", "host"} or
            {"acquired": false, "error": the line the run would stop with}
  check     {"error": the line a run stops with when its lock was taken over, or null}
  release   gives the lock back: {"released": true}
"""

from __future__ import annotations

import json
import socket
import sys
import time

from stss_jax import storage
from stss_jax.train import workdir


def main(workdir_path: str) -> None:
  storage.configure()
  lock = None
  for line in sys.stdin:
    command, _, argument = line.strip().partition(" ")
    if command == "go":
      time.sleep(max(0.0, float(argument) - time.time()))
      lock = workdir.WorkdirLock(workdir_path, heartbeat_s=0.1)
      try:
        lock.acquire()
        answer = {"acquired": True, "token": lock.token, "pid": lock.record["pid"]}
        answer["host"] = socket.gethostname()
      except workdir.WorkdirBusyError as e:
        answer = {"acquired": False, "error": str(e)}
    elif command == "check":
      try:
        lock.check()
        answer = {"error": None}
      except workdir.WorkdirBusyError as e:
        answer = {"error": str(e)}
    elif command == "release":
      lock.release()
      answer = {"released": True}
    else:
      answer = {"unknown": command}
    print(json.dumps(answer), flush=True)


if __name__ == "__main__":
  main(sys.argv[1])
