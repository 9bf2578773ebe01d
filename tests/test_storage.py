"""gs:// paths against a GCS emulator on the loopback interface (gcp-storage-emulator, started and
stopped here through tests/gcs_emulator.py, which adds the generation header and conditions of GCS
downloads that TensorStore needs; the only setting the tests make is the standard
STORAGE_EMULATOR_HOST).

Not tested here: TensorBoard summaries in a bucket. TensorFlow writes them with its own GCS client,
which always calls the real GCS, so under an emulator the trainer writes metrics.jsonl only, and
says so."""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from stss_jax import storage
from tests import conftest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUCKET = "stss-test"
TINY = "--config=configs/default.py:tiny"
SSV1 = "--config=configs/ssv1.py"
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
  process = subprocess.Popen(
    [
      sys.executable,
      "-m",
      "tests.gcs_emulator",
      "start",
      "--host=127.0.0.1",
      f"--port={port}",
      "--in-memory",
      f"--default-bucket={BUCKET}",
    ],
    cwd=ROOT,
    stdout=log,
    stderr=subprocess.STDOUT,
  )
  try:
    deadline = time.monotonic() + 60
    while True:
      try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        break
      except OSError:
        if process.poll() is not None or time.monotonic() > deadline:
          raise RuntimeError(
            f"the storage emulator did not start: {(tmp_path / 'emulator.log').read_text()}"
          ) from None
        time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
  finally:
    process.terminate()
    process.wait(timeout=30)
    log.close()


def _client(address: str):
  from google.auth.credentials import AnonymousCredentials

  return storage_client.Client(
    project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": address}
  )


def _upload(address: str, folder: pathlib.Path, prefix: str, only: str = "*") -> None:
  """Copies a local folder's files into the bucket with google-cloud-storage, not with project
  code."""
  bucket = _client(address).bucket(BUCKET)
  for path in folder.rglob(only):
    if path.is_file():
      bucket.blob(f"{prefix}/{path.relative_to(folder)}").upload_from_filename(str(path))


def _env(address: str) -> dict:
  """This process's environment with the emulator's address as the only storage setting."""
  env = {
    k: v for k, v in os.environ.items() if not k.startswith(("TENSORSTORE_", "EPATH_", "GOOGLE_"))
  }
  env.update(STORAGE_EMULATOR_HOST=address, JAX_PLATFORMS="cpu")
  return env


def _command(address: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, "-m", *args],
    cwd=ROOT,
    env=_env(address),
    capture_output=True,
    text=True,
    timeout=600,
  )


def test_is_local():
  assert storage.is_local("runs/x") and storage.is_local(pathlib.Path("/tmp/x"))
  assert not storage.is_local("gs://bucket/x")


def _main(address: str, workdir, *args: str, config: str = TINY) -> subprocess.Popen:
  # One device, as the trainer's own process tests use: their compiled programs are in the
  # session's cache.
  env = dict(_env(address), XLA_FLAGS=conftest.xla_flags(1))
  return subprocess.Popen(
    [sys.executable, "main.py", config, f"--workdir={workdir}", *args],
    cwd=ROOT,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def _finished(process: subprocess.Popen) -> tuple[str, str]:
  """The process's (stdout, stderr), once it has ended with status 0."""
  out, err = process.communicate(timeout=600)
  assert process.returncode == 0, err[-3000:]
  return out, err


def _summary(output: tuple[str, str]) -> str:
  """The final line of main.py's output, less the workdir it names."""
  return output[0].strip().splitlines()[-1].split("(workdir")[0]


@pytest.mark.slow  # a build, an emulator process, and seven commands in processes of their own
def test_a_run_in_a_bucket_killed_and_resumed_ends_as_on_disk_and_its_model_predicts_the_same(
  tmp_path, emulator
):
  """A TFDS build and the workdir in the bucket, against the same run with both on disk."""
  from input_pipeline import prepare
  from tests.test_video_source import TINY_INPUT, TINY_MODEL, write_ssv1

  write_ssv1(tmp_path / "raw", train=10, validation=5)
  prepare.prepare(
    "ssv1", str(tmp_path / "raw"), str(tmp_path / "tfds"), resize_hw=(40, 48), workers=1
  )
  _upload(emulator, tmp_path / "tfds" / "something_something_v1", "tfds/something_something_v1")
  model = [*TINY_INPUT, *TINY_MODEL]
  steps = [
    "--config.total_steps=4",
    "--config.eval_every_steps=4",
    "--config.checkpoint_every_steps=2",
    *model,
    "--config.batch_size=4",
    "--config.log_every_steps=1",
    "--config.dataset.no_flip_labels=(0,1)",
  ]

  def run(workdir, data_dir, *more):
    return _main(
      emulator, workdir, *steps, f"--config.dataset.data_dir={data_dir}", *more, config=SSV1
    )

  on_disk = _finished(run(tmp_path / "run", tmp_path / "tfds"))
  bucket = _client(emulator).bucket(BUCKET)
  in_bucket = (f"gs://{BUCKET}/run", f"gs://{BUCKET}/tfds")
  killed = run(*in_bucket)
  deadline = time.monotonic() + 600
  # Killed once its first checkpoint is complete, with half of its steps still to go.
  while not bucket.blob("run/checkpoints/2/commit_success.txt").exists() and killed.poll() is None:
    assert time.monotonic() < deadline
    time.sleep(0.1)
  killed.send_signal(signal.SIGKILL)
  killed.communicate()
  assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
  resumed = _finished(run(*in_bucket))
  assert f"resumed from step 2 of gs://{BUCKET}/run/checkpoints" in resumed[1]
  served = (tmp_path / "emulator.log").read_text()  # the records came from the bucket
  assert re.search(r"GET \S*tfds%2Fsomething_something_v1%2F\S*array_record", served), served[
    -2000:
  ]
  assert _summary(resumed) == _summary(on_disk)
  # Read back with google-cloud-storage, not project code: the same reports and metrics rows.
  report = json.loads(bucket.blob("run/eval_validation_step4.json").download_as_text())
  assert report == json.loads((tmp_path / "run" / "eval_validation_step4.json").read_text())
  rows = [
    json.loads(line) for line in bucket.blob("run/metrics.jsonl").download_as_text().splitlines()
  ]
  local_rows = [
    json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
  ]
  assert [(r["step"], r["split"]) for r in rows] == [(r["step"], r["split"]) for r in local_rows]
  assert [r["loss"] for r in rows] == [
    r["loss"] for r in local_rows
  ]  # the same batches, read from the bucket
  assert not bucket.blob("run/lock.json").exists()

  # predict and visualize: the trained model directory, a clip array, the logits and the picture in
  # the bucket.
  rng = np.random.default_rng(0)
  np.save(tmp_path / "clips.npy", rng.normal(size=(2, 4, 32, 32, 3)).astype(np.float32))
  _upload(emulator, tmp_path, "inputs", only="clips.npy")

  from stss_jax import predict, visualize

  # From disk in this process (its compiled programs are the session's), from the bucket in
  # processes of their own.
  local = tmp_path / "run" / "model"
  assert (
    predict.main(
      [
        "predict",
        SSV1,
        *model,
        f"--checkpoint={local}",
        f"--clip={tmp_path / 'clips.npy'}",
        f"--output={tmp_path / 'logits.npy'}",
      ]
    )
    == 0
  )
  assert (
    visualize.main(
      ["visualize", SSV1, *model, f"--checkpoint={local}", f"--output={tmp_path / 'stss.png'}"]
    )
    == 0
  )
  checkpoint = f"--checkpoint=gs://{BUCKET}/run/model"
  for args in (
    (
      "stss_jax.predict",
      f"--clip=gs://{BUCKET}/inputs/clips.npy",
      f"--output=gs://{BUCKET}/outputs/logits.npy",
    ),
    ("stss_jax.visualize", f"--output=gs://{BUCKET}/outputs/stss.png"),
  ):
    done = _command(emulator, args[0], SSV1, *model, checkpoint, *args[1:])
    assert done.returncode == 0, done.stderr[-3000:]
  (tmp_path / "logits_from_bucket.npy").write_bytes(
    bucket.blob("outputs/logits.npy").download_as_bytes()
  )
  np.testing.assert_array_equal(
    np.load(tmp_path / "logits_from_bucket.npy"), np.load(tmp_path / "logits.npy")
  )
  assert bucket.blob("outputs/stss.png").download_as_bytes() == (tmp_path / "stss.png").read_bytes()


@pytest.mark.slow  # an emulator process, and commands in processes of their own
def test_a_missing_bucket_is_named_in_one_line_by_the_trainer_the_pipeline_and_predict(
  tmp_path, emulator
):
  trainer = _main(emulator, "gs://no-such-bucket/run")
  _, err = trainer.communicate(timeout=600)
  assert trainer.returncode == 1
  assert err.strip().splitlines()[-1] == (
    "error: --workdir gs://no-such-bucket/run: the bucket no-such-bucket does "
    "not exist (or these credentials cannot see it)"
  )
  batches = _command(
    emulator,
    "input_pipeline.inspect",
    SSV1,
    "--config.dataset.data_dir=gs://no-such-bucket/tfds",
    "--split=train",
    "--num_batches=1",
    f"--output={tmp_path / 'x.npz'}",
  )
  assert batches.returncode != 0
  assert batches.stderr.strip().splitlines()[-1] == (
    "error: config.dataset.data_dir = 'gs://no-such-bucket/tfds': the bucket no-such-bucket does "
    "not exist or "
    "cannot be seen with these credentials"
  )
  missing = _command(
    emulator,
    "stss_jax.predict",
    TINY,
    "--checkpoint=gs://no-such-bucket/model",
    f"--clip={tmp_path / 'clips.npy'}",
    f"--output={tmp_path / 'x.npy'}",
  )
  assert missing.returncode == 1
  assert (
    missing.stderr.strip()
    .splitlines()[-1]
    .startswith("error: gs://no-such-bucket/model: the bucket no-such-bucket does not exist")
  )


@pytest.mark.slow  # an emulator process, and commands in processes of their own
def test_the_official_layout_in_a_bucket_gives_the_batches_read_from_disk(tmp_path, emulator):
  """Frame folders (SSv1) read from the bucket, and a video file decoded from it."""
  from tests.test_frames import encode, moving_square
  from tests.test_video_source import TINY_INPUT, write_ssv1

  write_ssv1(tmp_path / "raw", train=4, validation=2)
  _upload(emulator, tmp_path / "raw", "raw")

  def batches(data_dir, output):
    done = _command(
      emulator,
      "input_pipeline.inspect",
      SSV1,
      f"--config.dataset.data_dir={data_dir}",
      *TINY_INPUT,
      "--config.dataset.no_flip_labels=()",
      "--config.batch_size=2",
      "--split=train",
      "--num_batches=2",
      f"--output={output}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return np.load(output)

  disk, bucket = (
    batches(tmp_path / "raw", tmp_path / "disk.npz"),
    batches(f"gs://{BUCKET}/raw", tmp_path / "bucket.npz"),
  )
  assert sorted(disk.files) == sorted(bucket.files) and len(disk["ids"]) == 4
  for key in disk.files:
    np.testing.assert_array_equal(bucket[key], disk[key], err_msg=key)
  built = _command(
    emulator,
    "input_pipeline.prepare",
    "--dataset=ssv1",
    f"--manual_dir=gs://{BUCKET}/raw",
    f"--data_dir={tmp_path / 'tfds'}",
    "--resize_hw=40,48",
    "--workers=1",
  )
  assert built.returncode == 0, built.stderr[-3000:]
  assert "train: 4 videos written, 0 skipped" in built.stdout
  (tmp_path / "video").mkdir()
  encode(tmp_path / "video" / "v.mp4", moving_square(6), "mpeg4")
  _upload(emulator, tmp_path / "video", "videos")
  decoded = subprocess.run(
    [
      sys.executable,
      "-c",
      "import sys, numpy as np; from stss_jax import storage; storage.configure(); "
      "from input_pipeline import frames; np.save(sys.argv[2], frames.decode_video(sys.argv[1]))",
      f"gs://{BUCKET}/videos/v.mp4",
      str(tmp_path / "from_bucket.npy"),
    ],
    cwd=ROOT,
    env=_env(emulator),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert decoded.returncode == 0, decoded.stderr[-3000:]
  from input_pipeline import frames

  np.testing.assert_array_equal(
    np.load(tmp_path / "from_bucket.npy"), frames.decode_video(tmp_path / "video" / "v.mp4")
  )


@pytest.mark.slow  # an emulator process
def test_moving_a_folder_in_a_bucket_moves_every_object_under_it(emulator):
  """What the trainer does to a damaged checkpoint in a bucket workdir
  (checkpoints/damaged/STEP)."""
  bucket = _client(emulator).bucket(BUCKET)
  objects = {
    "ck/4/_CHECKPOINT_METADATA": b"a",
    "ck/4/default/manifest.ocdbt": b"bc",
    "ck/4/default/d/x": b"d",
  }
  for name, content in {**objects, "ck/40/kept": b"e"}.items():
    bucket.blob(name).upload_from_string(content)
  done = subprocess.run(
    [
      sys.executable,
      "-c",
      "from stss_jax import storage; storage.configure(); "
      f"storage.move(storage.path('gs://{BUCKET}/ck/4'), storage.path('gs://{BUCKET}/ck/damaged/4'))",
    ],
    cwd=ROOT,
    env=_env(emulator),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  moved = {b.name: b.download_as_bytes() for b in bucket.list_blobs()}
  assert moved == {
    **{n.replace("ck/4/", "ck/damaged/4/"): c for n, c in objects.items()},
    "ck/40/kept": b"e",
  }


@pytest.mark.slow  # an emulator, two jax.distributed processes killed and rerun, three commands
def test_two_processes_into_a_bucket_killed_and_resumed_end_with_a_model_others_can_use(
  tmp_path, emulator
):
  """The pod user's path on CPU (docs/training.md): a fixture dataset's TFDS build in a bucket, a
  two-process run whose workdir is the bucket, killed after its first checkpoint and rerun, ends
  with gs://.../model; predict and export take it alone, and it is the model one process with both
  devices trains from the same build on disk."""
  from input_pipeline import prepare
  from tests.test_video_source import CLASSES, TINY_INPUT, TINY_MODEL, write_ssv1

  write_ssv1(tmp_path / "raw", train=8, validation=4)
  prepare.prepare(
    "ssv1", str(tmp_path / "raw"), str(tmp_path / "tfds"), resize_hw=(40, 48), workers=1
  )
  _upload(emulator, tmp_path / "tfds" / "something_something_v1", "tfds/something_something_v1")
  steps = [
    SSV1,
    *TINY_INPUT,
    *TINY_MODEL,
    "--config.batch_size=4",
    "--config.dataset.no_flip_labels=(0,1)",
    "--config.total_steps=4",
    "--config.checkpoint_every_steps=2",
    "--config.eval_every_steps=4",
  ]
  bucket = _client(emulator).bucket(BUCKET)

  def two_processes():
    port = _free_port()
    env = dict(_env(emulator), XLA_FLAGS=conftest.xla_flags(1))
    return [
      subprocess.Popen(
        [
          sys.executable,
          "main.py",
          f"--workdir=gs://{BUCKET}/two",
          *steps,
          f"--config.dataset.data_dir=gs://{BUCKET}/tfds",
          f"--coordinator_address=localhost:{port}",
          "--num_processes=2",
          f"--process_id={i}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
      )
      for i in range(2)
    ]

  killed = two_processes()
  deadline = time.monotonic() + 600
  while not bucket.blob("two/checkpoints/2/commit_success.txt").exists():
    assert time.monotonic() < deadline and all(p.poll() is None for p in killed), [
      p.communicate()[1][-2000:] for p in killed if p.poll() is not None
    ]
    time.sleep(0.1)
  for process in killed:
    process.send_signal(signal.SIGKILL)
    process.communicate()
  rerun = two_processes()
  resumed = [process.communicate(timeout=600) for process in rerun]
  assert [p.returncode for p in rerun] == [0, 0], resumed[0][1][-3000:] + resumed[1][1][-3000:]
  assert "resumed from step 2" in resumed[0][1]
  assert bucket.blob("two/model/model_config.json").exists()
  assert not bucket.blob("two/lock.json").exists()

  one = subprocess.run(
    [
      sys.executable,
      "main.py",
      f"--workdir={tmp_path / 'one'}",
      *steps,
      f"--config.dataset.data_dir={tmp_path / 'tfds'}",
    ],
    cwd=ROOT,
    env=dict(_env(emulator), XLA_FLAGS=conftest.xla_flags(2)),
    capture_output=True,
    text=True,
  )
  assert one.returncode == 0, one.stderr[-3000:]
  assert _summary((resumed[0][0], "")) == _summary((one.stdout, ""))
  np.save(tmp_path / "clips.npy", np.random.default_rng(0).normal(size=(2, 4, 32, 32, 3)))
  logits = {}
  for name, model in (("two", f"gs://{BUCKET}/two/model"), ("one", tmp_path / "one" / "model")):
    done = _command(
      emulator,
      "stss_jax.predict",
      f"--checkpoint={model}",
      f"--clip={tmp_path / 'clips.npy'}",
      f"--output={tmp_path / name}.npy",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    logits[name] = np.load(tmp_path / f"{name}.npy")
  np.testing.assert_allclose(logits["two"], logits["one"], rtol=1e-4, atol=1e-5)
  exported = _command(
    emulator,
    "stss_jax.export",
    f"--checkpoint=gs://{BUCKET}/two/model",
    f"--output={tmp_path / 'exported'}",
  )
  assert exported.returncode == 0, exported.stderr[-3000:]
  described = json.loads((tmp_path / "exported" / "stss_export.json").read_text())
  assert described["class_names"] == CLASSES


def _stale_lock(pid: int) -> str:
  """The lock of a run on another host that stopped refreshing it an hour ago."""
  hour_ago = time.time() - 3600
  record = {"token": "stale", "host": "preempted-vm", "pid": pid, "started": hour_ago}
  return json.dumps({**record, "alive": hour_ago})


@pytest.mark.slow  # an emulator and two processes
def test_twenty_races_for_a_bucket_lock_each_have_one_winner_and_the_bucket_one_lock(emulator):
  """Two runs take the lock of one gs:// workdir at the same moment, 20 times; in every other race
  a stale lock is there to be taken over. Each time exactly one gets it, the other's line names
  the winner, and the bucket holds the winner's lock alone; a release deletes it. Then a lock taken
  over under its owner is noticed at the owner's next refresh and not deleted by its release."""
  bucket = _client(emulator).bucket(BUCKET)
  runs = [
    subprocess.Popen(
      [sys.executable, "-m", "tests.lock_contender", f"gs://{BUCKET}/run"],
      cwd=ROOT,
      env=_env(emulator),
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      text=True,
    )
    for _ in range(2)
  ]

  def ask(run, command):
    run.stdin.write(command + "\n")
    run.stdin.flush()
    line = run.stdout.readline()
    assert line, f"a contender ended: {run.wait(timeout=30)}"
    return json.loads(line)

  def locks():
    return {blob.name: blob.download_as_text() for blob in bucket.list_blobs(prefix="run/")}

  try:
    for race in range(20):
      if race % 2:
        bucket.blob("run/lock.json").upload_from_string(_stale_lock(pid=race))
      moment = time.time() + 0.5
      for run in runs:
        run.stdin.write(f"go {moment}\n")
        run.stdin.flush()
      answers = [json.loads(run.stdout.readline()) for run in runs]
      winners = [a for a in answers if a["acquired"]]
      assert len(winners) == 1, (race, answers)
      winner = winners[0]
      (loser,) = [a for a in answers if not a["acquired"]]
      assert f"in use by the run of pid {winner['pid']} on host {winner['host']}" in loser["error"]
      held = locks()
      assert list(held) == ["run/lock.json"], (race, held)
      assert json.loads(held["run/lock.json"])["token"] == winner["token"], race
      owner = runs[answers.index(winner)]
      assert ask(owner, "release") == {"released": True}
      assert locks() == {}, race

    assert ask(runs[0], f"go {time.time()}")["acquired"]
    bucket.blob("run/lock.json").upload_from_string(_stale_lock(pid=1))  # another run took it
    time.sleep(1.0)  # ten refreshes
    error = ask(runs[0], "check")["error"]
    assert "was taken over by another run (pid 1 on host preempted-vm" in error
    ask(runs[0], "release")
    assert json.loads(locks()["run/lock.json"])["token"] == "stale"
  finally:
    for run in runs:
      run.stdin.close()
      run.wait(timeout=30)
