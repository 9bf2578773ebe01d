"""Where metrics go: DIR/metrics.jsonl (one JSON object per line) and TensorBoard."""

from __future__ import annotations

import json
import os
import time

import numpy as np
from absl import logging
from etils import epath

from stss_jax import storage
from stss_jax.files import write_text_atomically


class MetricsWriter:
  """Appends metrics to metrics.jsonl and TensorBoard; only process 0 writes.

  A bucket's objects cannot be appended to: in a gs:// workdir the file's text is kept here and
  uploaded whole at most every `upload_every_s` seconds, at each flush (the trainer flushes at every
  checkpoint, so that a resumed run finds every row up to its step) and at close.
  """

  def __init__(self, workdir: epath.Path, enabled: bool = True, upload_every_s: float = 30.0):
    self.enabled = enabled
    self.path = workdir / "metrics.jsonl"
    self.local = storage.is_local(workdir)
    self.upload_every_s = upload_every_s
    self._lines = None  # in a bucket: the file's lines as they should be, once read
    self._uploaded = 0.0  # time.monotonic() of the last upload
    self._torn = False  # whether the file's last row, as last read, was cut off mid-write
    self.summary_writer = None
    if enabled:
      self.summary_writer = _summary_writer(workdir / "tensorboard")

  def _bucket_lines(self) -> list[str]:
    if self._lines is None:
      self._lines = self.path.read_text().splitlines(keepends=True) if self.path.is_file() else []
    return self._lines

  def rows(self) -> list[dict]:
    """The rows of metrics.jsonl (see `parse_rows`); [] when it does not exist yet."""
    if self.local:
      lines = self.path.read_text().splitlines(keepends=True) if self.path.is_file() else []
    else:
      lines = self._bucket_lines()
    rows, torn_line = parse_rows(lines, self.path)
    if torn_line and not self._torn:
      logging.warning(
        "%s: line %d was cut off mid-write (the run was stopped while appending it); it is "
        "dropped, and the step it belonged to is logged again",
        self.path,
        torn_line,
      )
    self._torn = bool(torn_line)
    return rows

  def keep_rows(self, keep, restore: dict | None = None) -> None:
    """Rewrites metrics.jsonl (atomically) with only the rows for which keep(row) is true; a
    torn last row (see `parse_rows`) goes too. restore: {(step, split): metrics} of rows to
    write again where the file lacks them, in step order (a step's train row first)."""
    if not self.enabled:
      return
    rows = self.rows()
    kept_rows = [row for row in rows if keep(row)]
    present = {(row["step"], row["split"]) for row in kept_rows}
    missing = [
      {"step": int(step), "split": split, **plain_row(metrics)}
      for (step, split), metrics in (restore or {}).items()
      if (step, split) not in present
    ]
    if missing:
      kept_rows = sorted(
        kept_rows + missing, key=lambda row: (row["step"], row["split"] != "train")
      )
    kept = [json.dumps(row) + "\n" for row in kept_rows]
    if len(kept) != len(rows) or self._torn or missing:
      write_text_atomically(self.path, "".join(kept))
      self._torn = False
      if not self.local:
        self._lines, self._uploaded = kept, time.monotonic()

  def write(self, step: int, split: str, metrics: dict, labels: dict | None = None) -> None:
    """One row {step, split, **labels, **metrics}; `labels` (e.g. a corruption and its severity)
    say what was measured and also name the TensorBoard group, split_label1_label2."""
    if not self.enabled:
      return
    record = {"step": int(step), "split": split, **(labels or {}), **plain_row(metrics)}
    line = json.dumps(record) + "\n"
    if self.local:
      with self.path.open("a") as f:
        f.write(line)
    else:
      self._bucket_lines().append(line)  # appended here, uploaded whole by flush()
      if time.monotonic() - self._uploaded >= self.upload_every_s:
        self.flush()
    if self.summary_writer is not None:
      import tensorflow as tf

      group = "_".join([split, *map(str, (labels or {}).values())])
      with self.summary_writer.as_default(step=int(step)):
        for key, value in metrics.items():
          if np.ndim(value) == 0:
            tf.summary.scalar(f"{group}/{key}", float(value))
      self.summary_writer.flush()

  def flush(self) -> None:
    """Uploads metrics.jsonl to a bucket workdir (local files are written row by row)."""
    if self.enabled and not self.local and self._lines is not None:
      self.path.write_text("".join(self._lines))  # an upload replaces the object whole
      self._uploaded = time.monotonic()

  def close(self) -> None:
    self.flush()
    if self.summary_writer is not None:
      self.summary_writer.close()
      self.summary_writer = None


def parse_rows(lines: list[str], path) -> tuple[list[dict], int | None]:
  """(rows, torn_line) of metrics.jsonl's `lines`. A run killed while appending leaves its last
  row cut off: that row is left out, and torn_line is its line number (else None). Any other row
  that is not a JSON object with a step and a split is an error naming the file and the line."""
  numbered = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
  rows = []
  for index, (number, line) in enumerate(numbered):
    try:
      row = json.loads(line)
      if not (isinstance(row, dict) and isinstance(row.get("step"), int) and "split" in row):
        raise ValueError("not a row of {step, split, metrics...}")
    except ValueError as e:
      if index == len(numbered) - 1:
        return rows, number
      raise ValueError(
        f"{path}, line {number}, is unreadable ({e}); remove or repair that line and rerun"
      ) from None
    rows.append(row)
  return rows, None


def _summary_writer(directory: epath.Path):
  """A TensorBoard writer for `directory`, or None (with the reason logged) where there can be
  none."""
  if not storage.is_local(directory) and os.environ.get(storage.EMULATOR):
    # TensorFlow's own GCS client writes the event files; it always calls the real GCS.
    logging.warning(
      "no TensorBoard summaries: TensorFlow's GCS client cannot reach the emulator at %s=%s "
      "(metrics.jsonl has every row)",
      storage.EMULATOR,
      os.environ[storage.EMULATOR],
    )
    return None
  try:
    import tensorflow as tf  # the CPU build is enough; absent on some accelerator images
  except ImportError:
    logging.warning("tensorflow is not installed: no TensorBoard summaries, metrics.jsonl only")
    return None
  tf.config.set_visible_devices([], "GPU")
  return tf.summary.create_file_writer(os.fspath(directory))


def plain_row(metrics: dict) -> dict:
  """Metrics as JSON takes them: scalars as floats, arrays as nested lists."""
  return {key: _plain(value) for key, value in metrics.items()}


def _plain(value):
  return float(value) if np.ndim(value) == 0 else np.asarray(value).tolist()
