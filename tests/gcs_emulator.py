"""The GCS emulator of the storage tests: gcp-storage-emulator on the loopback interface, with
behaviours of real GCS that it lacks and that TensorStore (orbax's writer) and the workdir lock rely
on.

- A media download carries the object's generation in the `x-goog-generation` header, and honours
  the conditions `ifGenerationMatch` (412 when the object's generation differs) and
  `ifGenerationNotMatch` (304, no body, when it is equal). TensorStore reads the header after each
  conditional read of an OCDBT manifest; without it the second checkpoint of a run fails with
  "Malformed StorageGeneration".
- An upload (checked when it starts) and a delete honour `ifGenerationMatch`, "0" meaning that the
  object must not exist: 412 otherwise. The workdir lock in a bucket is created, refreshed, taken
  over and released under these conditions.

The emulator serves one request at a time, so a condition and the write it guards are one step, as
on GCS. Its own handlers are wrapped and nothing else changes.

  python -m tests.gcs_emulator start --host=127.0.0.1 --port=PORT --in-memory --default-bucket=NAME
"""

from __future__ import annotations

import sys
from http import HTTPStatus

from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_download, _insert, _delete = objects.download, objects.insert, objects.delete


def _generation(storage, bucket: str, name: str | None) -> str:
  try:
    return str(storage.get_file_obj(bucket, name).get("generation") or "0")
  except NotFound:
    return "0"


def _condition_fails(request, response, storage, name: str | None) -> bool:
  """Answers 412 when the request's ifGenerationMatch is not the object's generation."""
  match = request.query.get("ifGenerationMatch")
  if not match or name is None:
    return False
  if match[0] == _generation(storage, request.params["bucket_name"], name):
    return False
  response.status = HTTPStatus.PRECONDITION_FAILED
  return True


def download(request, response, storage, *args, **kwargs):
  try:
    obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
  except NotFound:
    return _download(request, response, storage, *args, **kwargs)
  generation = str(obj.get("generation") or "0")
  match = request.query.get("ifGenerationMatch")
  not_match = request.query.get("ifGenerationNotMatch")
  response["x-goog-generation"] = generation
  response["x-goog-metageneration"] = str(obj.get("metageneration") or "1")
  if match and match[0] != generation:
    response.status = HTTPStatus.PRECONDITION_FAILED
    return None
  if not_match and not_match[0] == generation:
    response.status = HTTPStatus.NOT_MODIFIED
    return None
  return _download(request, response, storage, *args, **kwargs)


def insert(request, response, storage, *args, **kwargs):
  name = request.query.get("name", [None])[0]
  if name is None and isinstance(request.data, dict):  # multipart and resumable: in the metadata
    name = (request.data.get("meta") or request.data).get("name")
  if _condition_fails(request, response, storage, name):
    return None
  return _insert(request, response, storage, *args, **kwargs)


def delete(request, response, storage, *args, **kwargs):
  if _condition_fails(request, response, storage, request.params["object_id"]):
    return None
  return _delete(request, response, storage, *args, **kwargs)


# Before the server module builds its routes from them.
objects.download, objects.insert, objects.delete = download, insert, delete

if __name__ == "__main__":
  from gcp_storage_emulator.__main__ import main

  main(sys.argv[1:])
