"""glibc's heap tops kept for the input pipeline: the setting, and the page faults it saves."""

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from input_pipeline import allocator

pytest.importorskip("tensorflow")

from benchmarks.input_pipeline import write_videos  # noqa: E402
from input_pipeline import prepare  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_pad_is_set_unless_turned_off_and_a_bad_setting_names_the_variable(monkeypatch):
  monkeypatch.delenv(allocator.ENVIRONMENT, raising=False)
  assert allocator.keep_heap_tops() == allocator.TOP_PAD_MB
  monkeypatch.setenv(allocator.ENVIRONMENT, "4")
  assert allocator.keep_heap_tops() == 4
  monkeypatch.setenv(allocator.ENVIRONMENT, "0")
  assert allocator.keep_heap_tops() == 0
  monkeypatch.setenv(allocator.ENVIRONMENT, "lots")
  with pytest.raises(ValueError, match="STSS_JAX_MALLOC_TOP_PAD_MB='lots'.*whole number, or 0"):
    allocator.keep_heap_tops()


FAULTS_PER_CLIP = """
import os, resource, sys
from configs import ssv1
from input_pipeline import sources

config = ssv1.get_config()
config.dataset.data_dir = sys.argv[1]
config.dataset.num_classes, config.dataset.no_flip_labels = 2, ()
config.input.resize_on_accelerator = True
stream = sources.build_source(config).train_iterator(0, 8)
for _ in range(8):
  next(stream)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(16):
  next(stream)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 128, flush=True)
os._exit(0)  # not waiting for the unfinished stream's threads
"""


@pytest.mark.slow  # builds SSv2-sized videos, then reads them in two processes
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_clips_from_a_build_do_not_fault_their_memory_in_again(tmp_path):
  """SSv2-sized clips from a TFDS build (records of ~1 MB): with the heap tops kept, a clip takes
  a few minor page faults; with glibc's defaults (the setting turned off) hundreds, as each clip's
  freed buffers went back to the kernel."""
  write_videos(tmp_path / "raw", 12, (240, 427))
  prepare.prepare("ssv1", str(tmp_path / "raw"), str(tmp_path / "built"), resize_hw=(240, 320))
  faults = {}
  for setting in ("", "0"):
    env = {
      **os.environ,
      allocator.ENVIRONMENT: setting,
      "TF_CPP_MIN_LOG_LEVEL": "2",
      "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
      [sys.executable, "-c", textwrap.dedent(FAULTS_PER_CLIP), str(tmp_path / "built")],
      capture_output=True,
      text=True,
      timeout=300,
      cwd=ROOT,
      env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    faults[setting] = float(done.stdout.split()[-1])
  assert faults[""] < 150 and faults["0"] > 3 * faults[""], faults
