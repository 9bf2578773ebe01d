"""The GCS emulator of the storage tests: gcp-storage-emulator on the loopback interface, with two
behaviours of real GCS that it lacks and TensorStore (orbax's writer) relies on.

A media download from GCS carries the object's generation in the `x-goog-generation` header, and
honours the conditions `ifGenerationMatch` (412 when the object's generation differs) and
`ifGenerationNotMatch` (304, no body, when it is equal). TensorStore reads the header after each
conditional read of an OCDBT manifest; without it the second checkpoint of a run fails with
"Malformed StorageGeneration". The emulator's own download is wrapped to add both, and nothing else
changes.

  python -m tests.gcs_emulator start --host=127.0.0.1 --port=PORT --in-memory --default-bucket=NAME
"""

from __future__ import annotations

import sys
from http import HTTPStatus

from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_download = objects.download


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


objects.download = download  # before the server module builds its routes from it

if __name__ == "__main__":
  from gcp_storage_emulator.__main__ import main

  main(sys.argv[1:])
