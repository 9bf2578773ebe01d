"""Test session settings: eight CPU devices, one compilation cache, and where the fixtures live.

Every test process sees eight host devices, so that sharded runs are tested in process
(tests pick one device where they want one). XLA compiles without most optimisations, and compiled
programs go to a cache that lives as long as the session and that subprocesses share, so a program
compiled once (the tiny config's train step, say) is not compiled again by the next test. The
fixtures in tests/fixtures are numbers computed
by the authors' code (tests/fixtures/README.md) and the authors' SSv1 class list; they ship
with the repository, so parity is checked in every clone.
"""

import os
import pathlib
import shutil
import tempfile

# The first process of a session (pytest itself, or the xdist controller) makes the cache and
# removes it at the end; xdist workers and subprocesses inherit it through the environment.
OWNS_COMPILATION_CACHE = "STSS_JAX_TEST_COMPILATION_CACHE" not in os.environ
if OWNS_COMPILATION_CACHE:
  os.environ["STSS_JAX_TEST_COMPILATION_CACHE"] = tempfile.mkdtemp(
    prefix="stss-jax-test-compilations-"
  )
COMPILATION_CACHE = os.environ["STSS_JAX_TEST_COMPILATION_CACHE"]
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["JAX_COMPILATION_CACHE_DIR"] = COMPILATION_CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
# The tests' programs are tiny: compiling them dominates, so XLA skips most optimisations (numerics
# stay within every test's tolerance). Subprocesses inherit it.
os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"


def xla_flags(devices: int) -> str:
  """XLA_FLAGS for a test process with `devices` host devices. XLA:CPU's older elemental emitters
  compile the tiny config's train step in half the time of its fusion emitters (3.0 against 5.9 s
  on 2 cores) and run it 15% slower: compiling dominates here."""
  return f"--xla_force_host_platform_device_count={devices} --xla_cpu_use_fusion_emitters=false"


os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), xla_flags(8)]).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="session", autouse=True)
def _tensorflow_leaves_the_accelerators_alone():
  """tf.data runs on the CPU; TensorFlow must not take GPU memory JAX will want."""
  try:
    import tensorflow as tf
  except ImportError:
    return
  tf.config.set_visible_devices([], "GPU")


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  if OWNS_COMPILATION_CACHE:
    shutil.rmtree(COMPILATION_CACHE, ignore_errors=True)
