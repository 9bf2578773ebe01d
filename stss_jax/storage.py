"""Where cloud paths (gs://) go: one path library for the project's own files, and the emulator
setting honoured by every GCS client the commands use.

etils.epath sends gs:// through TensorFlow's own GCS client whenever TensorFlow is installed.
That client ignores STORAGE_EMULATOR_HOST (it always calls www.googleapis.com), so the project
routes epath's gs:// through fsspec's gcsfs instead (EPATH_USE_TF=false), which honours it and
uses the same Application Default Credentials on real buckets. Orbax writes array data through
TensorStore, whose GCS driver takes its endpoint from TENSORSTORE_GCS_HTTP_URL: with an emulator
named by the standard variable, that is set to the same address, with the placeholder token
TensorStore accepts for test endpoints, and ArrayRecord (the TFDS builds' files) reads gs:// with
its own client, pointed at an emulator by CLOUD_STORAGE_EMULATOR_ENDPOINT. Settings the user made
are kept.
"""

from __future__ import annotations

import logging
import os

from etils import epath

EMULATOR = "STORAGE_EMULATOR_HOST"


def configure() -> None:
  """Sets the environment for gs:// paths; call before the first cloud path is opened."""
  os.environ.setdefault("EPATH_USE_TF", "false")
  emulator = os.environ.get(EMULATOR)
  if emulator:
    address = emulator if "://" in emulator else f"http://{emulator}"
    os.environ.setdefault("TENSORSTORE_GCS_HTTP_URL", address)
    os.environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")
    os.environ.setdefault(
      "CLOUD_STORAGE_EMULATOR_ENDPOINT", address
    )  # ArrayRecord's reader (TFDS builds)
  # gcsfs asks each new bucket for its type and logs a warning whenever it cannot tell (no
  # credentials for that call); it then uses the plain bucket API, which is what we want.
  logging.getLogger("gcsfs").setLevel(logging.ERROR)


def path(location: str | os.PathLike) -> epath.Path:
  """A path of the project's files: local ones made absolute (orbax needs that), cloud ones as
  given."""
  return epath.Path(os.path.abspath(location) if is_local(location) else location)


def move(source: epath.Path, target: epath.Path) -> None:
  """Moves a file or a folder. Locally one rename; in a bucket, where a folder is only a name
  prefix, each object is copied to the target and the source is removed after the last copy."""
  if is_local(source):
    os.replace(source, target)
    return
  if source.is_file():
    target.write_bytes(source.read_bytes())
    source.unlink()
    return
  for file in _files(source):  # epath refuses rglob in buckets: one listing per folder instead
    (target / file.relative_to(source)).write_bytes(file.read_bytes())
  source.rmtree()


def _files(folder: epath.Path) -> list[epath.Path]:
  found = []
  for entry in folder.iterdir():
    found += _files(entry) if entry.is_dir() else [entry]
  return found


def missing_bucket(path) -> str | None:
  """The bucket of a cloud path when that bucket does not exist (or cannot be seen), else None."""
  if is_local(path):
    return None
  scheme, rest = os.fspath(path).split("://", 1)
  bucket = rest.split("/", 1)[0]
  return None if epath.Path(f"{scheme}://{bucket}").exists() else bucket


def is_local(path) -> bool:
  """True for a path on this machine's file system (no scheme such as gs://)."""
  return "://" not in os.fspath(path)
