"""Stopping a run cleanly whenever it is asked to: SIGTERM (how TPU VMs, Slurm and Kubernetes
preempt) and SIGINT (Ctrl-C), at any moment of a command's life.

`handlers()` puts one handler in place before the command does any work. What a signal does
depends on the moment:
- inside a training step (`StopRequests`, around the step loop): the step in flight ends, its
  checkpoint is written, and the loop raises `Preempted`. A second signal is not caught, so
  Ctrl-C twice stops at once;
- anywhere else (start-up and compiling, an evaluation, the export, `interruptible()` inside
  the loop): the handler raises `Stopped` at once. Nothing is lost that a rerun cannot redo:
  every checkpoint was complete before its evaluation began, and the export is rewritten from
  the final checkpoint.
Either way the command exits 0 after releasing the workdir, and a rerun resumes.

With several processes, JAX's distributed runtime receives SIGTERM once it is initialised, and
`reached_preemption_sync_point` makes every host stop after the same step.
"""

from __future__ import annotations

import contextlib
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


class Stopped(BaseException):
  """A signal arrived outside a training step; the command stops where it is. Like
  KeyboardInterrupt it is no Exception, so that no `except Exception` mistakes it for a fault
  of what it interrupted (a checkpoint being restored is not damaged)."""

  def __init__(self, signal_name: str):
    super().__init__(
      f"stopped by {signal_name} during {_moment}; every checkpoint written so far is kept. "
      "Rerun the same command to resume"
    )
    self.signal_name = signal_name


_moment = "start-up"  # what the command is doing, for the message of Stopped
_pending: str | None = None  # a signal received inside a training step, not yet acted on
_deferring = False  # inside a training step: signals are recorded, not raised
_installed: dict = {}  # signal number -> the handler before handlers()


def set_moment(moment: str) -> None:
  """Names what the command does now ("the evaluation of step 4"), for the message of Stopped."""
  global _moment
  _moment = moment


def _handle(number, frame) -> None:
  del frame
  global _pending
  name = signal.Signals(number).name
  if not _deferring:
    raise Stopped(name)
  _pending = name
  # A second signal is not caught: Ctrl-C twice stops at once.
  signal.signal(number, _installed.get(number, signal.SIG_DFL))
  print(
    f"\n{name}: finishing this step and saving a checkpoint (send it again to stop at once)",
    flush=True,
  )


@contextlib.contextmanager
def handlers(keep_ignoring: bool = False):
  """Catches SIGTERM and SIGINT for the block (main thread only; elsewhere a no-op).

  keep_ignoring: after the block, ignore both instead of restoring the handlers before it: for a
  process that only exits after this, so that a signal during its teardown loses nothing.
  """
  global _pending, _deferring
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  set_moment("start-up")
  _pending, _deferring = None, False
  for number in SIGNALS:
    _installed[number] = signal.signal(number, _handle)
  try:
    yield
  finally:
    _deferring = False
    for number in SIGNALS:
      previous = _installed.pop(number)
      signal.signal(number, signal.SIG_IGN if keep_ignoring else previous)


@contextlib.contextmanager
def deferred():
  """Signals received in the block are recorded, not raised (for work that must not be cut in
  half, such as giving the workdir up)."""
  global _deferring
  before, _deferring = _deferring, True
  try:
    yield
  finally:
    _deferring = before
  if _pending is not None and not before:
    raise Stopped(_pending)


@contextlib.contextmanager
def interruptible():
  """Inside StopRequests: a signal (or one already received) stops the block at once."""
  global _deferring
  if _pending is not None:
    raise Stopped(_pending)
  before, _deferring = _deferring, False
  try:
    yield
  finally:
    _deferring = before


class StopRequests:
  """`with StopRequests() as stop:` ... `stop.requested(step)` is True once the run should stop
  after `step`. Inside the block a signal ends the step in flight instead of stopping at once."""

  def __enter__(self) -> StopRequests:
    global _deferring
    self._own = None
    if not _installed:  # not under handlers() (a library caller): catch signals for the block
      self._own = handlers()
      self._own.__enter__()
    _deferring = True
    return self

  def __exit__(self, *exc) -> None:
    global _deferring, _pending
    _deferring = False
    _pending = None  # acted on: the loop stopped with Preempted
    if self._own is not None:
      self._own.__exit__(*exc)

  @property
  def signal_name(self) -> str | None:
    return _pending

  def requested(self, step: int) -> bool:
    """Whether to stop after `step`: the same answer on every host."""
    global _pending
    if jax.process_count() > 1:
      if multihost_utils.reached_preemption_sync_point(step):
        _pending = _pending or "SIGTERM"
        return True
      return False
    return _pending is not None
