"""Stopping a run cleanly when it is asked to: SIGTERM (how TPU VMs, Slurm and Kubernetes preempt)
and SIGINT (Ctrl-C) end the step in flight, a checkpoint is written, and the run exits.

In one process, Python handlers record the signal; a second Ctrl-C stops at once. With several
processes, JAX's distributed runtime receives SIGTERM, and `reached_preemption_sync_point` makes
every host stop after the same step.
"""

from __future__ import annotations

import signal
import threading

import jax
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
  """The run stopped on a signal after saving the checkpoint of `step`."""

  def __init__(self, step: int, signal_name: str, directory):
    super().__init__(
      f"stopped by {signal_name} after step {step}; its checkpoint is in {directory}. "
      "Rerun the same command to resume"
    )
    self.step = step


class StopRequests:
  """`with StopRequests() as stop:` ... `stop.requested(step)` is True once the run should stop."""

  def __init__(self):
    self.signal_name: str | None = None
    self._previous = {}

  def __enter__(self) -> StopRequests:
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      for number in SIGNALS:
        self._previous[number] = signal.signal(number, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for number, handler in self._previous.items():
      signal.signal(number, handler)
    self._previous = {}

  def _handle(self, number, frame) -> None:
    del frame
    self.signal_name = signal.Signals(number).name
    # A second signal is not caught: Ctrl-C twice stops at once.
    signal.signal(number, self._previous.get(number, signal.SIG_DFL))
    print(
      f"\n{self.signal_name}: finishing this step and saving a checkpoint "
      "(send it again to stop at once)",
      flush=True,
    )

  def requested(self, step: int) -> bool:
    """Whether to stop after `step`: the same answer on every host."""
    if jax.process_count() > 1:
      if multihost_utils.reached_preemption_sync_point(step):
        self.signal_name = self.signal_name or "SIGTERM"
        return True
      return False
    return self.signal_name is not None
