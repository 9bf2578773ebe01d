"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import json
import os
import pathlib
import tempfile

from etils import epath

from stss_jax import storage


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
  """Writes `text` to a fresh temporary file beside `path`, then renames it over `path`: readers
  see the old file or the whole new one, and concurrent writers never share a temporary file.
  In a bucket (gs://), where an object is replaced whole by each upload, it is written directly."""
  if not storage.is_local(path):
    epath.Path(path).write_text(text)
    return
  path = pathlib.Path(path)
  with tempfile.NamedTemporaryFile(
    "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
  ) as f:
    f.write(text)
  os.replace(f.name, path)


def write_json_atomically(path: str | os.PathLike, content) -> None:
  """`content` as indented JSON, written as write_text_atomically writes."""
  write_text_atomically(path, json.dumps(content, indent=1) + "\n")
