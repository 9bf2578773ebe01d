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


def _bucket_and_key(path) -> tuple[object, str, str]:
  """gcsfs's file system (the one epath's gs:// uses), the bucket and the object name of a gs://
  path."""
  import fsspec  # with gcsfs; imported here so that local-only commands never load them

  bucket, _, key = os.fspath(path).split("://", 1)[1].partition("/")
  return fsspec.filesystem("gs"), bucket, key


# Objects in a bucket, read and written under a condition on their generation: the number GCS gives
# each version of an object, "0" meaning that there is none. fsspec's file API has no conditions,
# so these make the JSON API's requests through gcsfs's own client (its credentials, retries and
# emulator address). A failed condition is GCS's 412, which gcsfs raises as FileExistsError.


def read_object(path) -> tuple[bytes, str] | None:
  """The contents of a gs:// object and their generation, or None when there is no such object."""
  fs, bucket, key = _bucket_and_key(path)
  try:
    headers, contents = fs.call("GET", "b/{}/o/{}", bucket, key, alt="media")
  except FileNotFoundError:
    return None
  return contents, headers["x-goog-generation"]


def write_object(path, data: bytes, if_generation: str) -> str | None:
  """Writes a gs:// object whose generation is `if_generation` now ("0": where there is none).

  Returns the new generation, or None when the object's generation was another one: of writers
  racing with the same condition, exactly one succeeds."""
  fs, bucket, key = _bucket_and_key(path)
  try:
    written = fs.call(
      "POST",
      f"{fs._location}/upload/storage/v1/b/{{}}/o",
      bucket,
      uploadType="media",
      name=key,
      ifGenerationMatch=if_generation,
      data=data,
      headers={"Content-Type": "application/octet-stream"},
      json_out=True,
    )
  except FileExistsError:
    return None
  finally:
    fs.invalidate_cache(os.fspath(path))
  return str(written["generation"])


def delete_object(path, if_generation: str) -> bool:
  """Deletes a gs:// object whose generation is `if_generation`; False when it had another one or
  was gone."""
  fs, bucket, key = _bucket_and_key(path)
  try:
    fs.call("DELETE", "b/{}/o/{}", bucket, key, ifGenerationMatch=if_generation)
  except (FileExistsError, FileNotFoundError):
    return False
  finally:
    fs.invalidate_cache(os.fspath(path))
  return True


def is_local(path) -> bool:
  """True for a path on this machine's file system (no scheme such as gs://)."""
  return "://" not in os.fspath(path)
