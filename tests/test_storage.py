"""gs:// paths against a GCS emulator on the loopback interface (gcp-storage-emulator, started and
stopped here; the only setting the tests make is the standard STORAGE_EMULATOR_HOST).

Not tested here: orbax *writing* into the emulator. TensorStore's OCDBT writes with generation
preconditions, and it rejects the generations this emulator answers with ("Malformed
StorageGeneration"), and no real bucket is reachable here: model_dir.save to gs:// is untested."""
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from configs import default
from stss_jax import model_dir, storage
from stss_jax.models import build_model

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUCKET = "stss-test"
storage_client = pytest.importorskip("google.cloud.storage")
pytest.importorskip("gcp_storage_emulator")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture
def emulator(tmp_path):
  """The emulator's address, with one empty bucket; stopped when the test ends."""
  port = _free_port()
  log = (tmp_path / "emulator.log").open("w")
  process = subprocess.Popen([sys.executable, "-m", "gcp_storage_emulator", "start", "--host=127.0.0.1",
                              f"--port={port}", "--in-memory", f"--default-bucket={BUCKET}"],
                             stdout=log, stderr=subprocess.STDOUT)
  try:
    deadline = time.monotonic() + 60
    while True:
      try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        break
      except OSError:
        if process.poll() is not None or time.monotonic() > deadline:
          raise RuntimeError(f"the storage emulator did not start: {(tmp_path / 'emulator.log').read_text()}")
        time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
  finally:
    process.terminate()
    process.wait(timeout=30)
    log.close()


def _client(address: str):
  from google.auth.credentials import AnonymousCredentials
  return storage_client.Client(project="test", credentials=AnonymousCredentials(),
                               client_options={"api_endpoint": address})


def _upload(address: str, folder: pathlib.Path, prefix: str, only: str = "*") -> None:
  """Copies a local folder's files into the bucket with google-cloud-storage, not with project code."""
  bucket = _client(address).bucket(BUCKET)
  for path in folder.rglob(only):
    if path.is_file():
      bucket.blob(f"{prefix}/{path.relative_to(folder)}").upload_from_filename(str(path))


def _command(address: str, *args: str) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if not k.startswith(("TENSORSTORE_", "EPATH_", "GOOGLE_"))}
  env.update(STORAGE_EMULATOR_HOST=address, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_is_local():
  assert storage.is_local("runs/x") and storage.is_local(pathlib.Path("/tmp/x"))
  assert not storage.is_local("gs://bucket/x")


def test_a_bucket_workdir_is_refused_in_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys):
  from stss_jax import main
  monkeypatch.chdir(tmp_path)
  assert main.main(["main", "--config=configs/default.py:tiny", "--workdir=gs://bucket/run"]) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1].startswith("error: --workdir gs://bucket/run: the trainer writes to a local (or mounted) directory")
  assert not any(tmp_path.iterdir())  # no folder named like the URL


@pytest.mark.slow  # an emulator process, and commands in processes of their own
def test_commands_read_a_model_directory_in_a_bucket_as_they_read_it_on_disk(tmp_path, emulator):
  config = default.get_config("tiny")
  model_dir.save(tmp_path / "model", build_model(config), config)
  _upload(emulator, tmp_path / "model", "runs/tiny/model")
  rng = np.random.default_rng(0)
  np.save(tmp_path / "clips.npy", rng.normal(size=(2, 4, 32, 32, 3)).astype(np.float32))
  _upload(emulator, tmp_path, "inputs", only="clips.npy")

  def predict_and_draw(checkpoint, clip, logits, picture):
    for args in (("stss_jax.predict", f"--clip={clip}", f"--output={logits}"), ("stss_jax.visualize", f"--output={picture}")):
      done = _command(emulator, args[0], "--config=configs/default.py:tiny", f"--checkpoint={checkpoint}", *args[1:])
      assert done.returncode == 0, done.stderr[-3000:]

  predict_and_draw(tmp_path / "model", tmp_path / "clips.npy", tmp_path / "logits.npy", tmp_path / "stss.png")
  # The model directory, the clip array, the logits and the picture all in the bucket.
  predict_and_draw(f"gs://{BUCKET}/runs/tiny/model", f"gs://{BUCKET}/inputs/clips.npy",
                   f"gs://{BUCKET}/outputs/logits.npy", f"gs://{BUCKET}/outputs/stss.png")
  bucket = _client(emulator).bucket(BUCKET)
  (tmp_path / "logits_from_bucket.npy").write_bytes(bucket.blob("outputs/logits.npy").download_as_bytes())
  np.testing.assert_array_equal(np.load(tmp_path / "logits_from_bucket.npy"), np.load(tmp_path / "logits.npy"))
  assert bucket.blob("outputs/stss.png").download_as_bytes() == (tmp_path / "stss.png").read_bytes()
  missing = _command(emulator, "stss_jax.predict", "--config=configs/default.py:tiny",
                     "--checkpoint=gs://no-such-bucket/model", f"--clip={tmp_path / 'clips.npy'}",
                     f"--output={tmp_path / 'x.npy'}")
  assert missing.returncode == 1
  assert missing.stderr.strip().splitlines()[-1].startswith("error: gs://no-such-bucket/model: the bucket no-such-bucket does not exist")


@pytest.mark.slow  # a build, an emulator process, and commands in processes of their own
def test_training_batches_from_a_tfds_build_in_a_bucket_equal_those_from_disk(tmp_path, emulator):
  from input_pipeline import prepare
  from tests.test_video_source import TINY_INPUT, write_ssv1

  write_ssv1(tmp_path / "raw", train=6, validation=3)
  prepare.prepare("ssv1", str(tmp_path / "raw"), str(tmp_path / "tfds"), resize_hw=(40, 48), workers=1)
  _upload(emulator, tmp_path / "tfds" / "something_something_v1", "tfds/something_something_v1")

  def batches(data_dir, output):
    return _command(emulator, "input_pipeline.inspect", "--config=configs/ssv1.py", f"--config.dataset.data_dir={data_dir}",
                    *TINY_INPUT, "--config.dataset.no_flip_labels=()", "--config.batch_size=2", "--split=train",
                    "--num_batches=2", f"--output={output}")

  for data_dir, output in ((tmp_path / "tfds", tmp_path / "disk.npz"), (f"gs://{BUCKET}/tfds", tmp_path / "bucket.npz")):
    done = batches(data_dir, output)
    assert done.returncode == 0, done.stderr[-3000:]
  disk, bucket = np.load(tmp_path / "disk.npz"), np.load(tmp_path / "bucket.npz")
  assert sorted(disk.files) == sorted(bucket.files) and len(disk["ids"]) == 4
  for key in disk.files:
    np.testing.assert_array_equal(bucket[key], disk[key], err_msg=key)
  missing = batches("gs://no-such-bucket/tfds", tmp_path / "x.npz")
  assert missing.returncode != 0
  assert missing.stderr.strip().splitlines()[-1] == ("error: config.dataset.data_dir = 'gs://no-such-bucket/tfds': the "
                                                      "bucket no-such-bucket does not exist or cannot be seen with these "
                                                      "credentials")
