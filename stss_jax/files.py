"""Writing files so that a reader never sees half of one."""
from __future__ import annotations

import json
import os
import pathlib
import tempfile


def write_json_atomically(path: str | os.PathLike, content) -> None:
  """Writes `content` as JSON to a fresh temporary file beside `path`, then renames it over
  `path`: readers see the old file or the whole new one, and concurrent writers never share a
  temporary file."""
  path = pathlib.Path(path)
  with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp",
                                   delete=False) as f:
    json.dump(content, f, indent=1)
    f.write("\n")
  os.replace(f.name, path)
