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
    os.environ.setdefault("CLOUD_STORAGE_EMULATOR_ENDPOINT", address)  # ArrayRecord's reader (TFDS builds)
  # gcsfs asks each new bucket for its type and logs a warning whenever it cannot tell (no
  # credentials for that call); it then uses the plain bucket API, which is what we want.
  logging.getLogger("gcsfs").setLevel(logging.ERROR)


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
