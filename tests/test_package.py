"""The installed package: `pip install .` gives importable packages and console commands that run
from any directory, with the configs bundled."""

import os
import pathlib
import shutil
import site
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
COMMANDS = (
  "stss-train",
  "stss-predict",
  "stss-convert",
  "stss-prepare",
  "stss-visualize",
  "stss-export",
  "stss-robustness",
)


@pytest.mark.slow  # a venv and a pip install, then commands in their own processes
def test_installed_commands_run_outside_the_checkout(tmp_path):
  source = tmp_path / "source"  # a copy, so that the build writes nothing into the checkout
  shutil.copytree(
    ROOT,
    source,
    ignore=shutil.ignore_patterns(
      ".git", ".venv", "runs", "__pycache__", "*.egg-info", "build", ".whl"
    ),
  )
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
  # The dependencies, pip and setuptools come from this test's environment (no index is
  # reached): a .pth file puts its site-packages behind the new venv's own.
  (next((venv / "lib").glob("python3*/site-packages")) / "dependencies.pth").write_text(
    "\n".join(site.getsitepackages()) + "\n"
  )
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
  bin_dir = venv / "bin"
  install = subprocess.run(
    [
      bin_dir / "python",
      "-m",
      "pip",
      "install",
      "-q",
      "--no-deps",
      "--no-build-isolation",
      "--no-index",
      str(source),
    ],
    env=env,
    capture_output=True,
    text=True,
  )
  assert install.returncode == 0, install.stderr[-3000:]
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()

  def run(*command):
    return subprocess.run(
      [str(c) for c in command], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=900
    )

  where = run(
    bin_dir / "python", "-c", "import stss_jax, input_pipeline, configs; print(stss_jax.__file__)"
  )
  assert where.returncode == 0, where.stderr[-3000:]
  assert "site-packages" in where.stdout and str(ROOT) not in where.stdout
  for command in COMMANDS:
    shown = run(bin_dir / command, "--help")
    assert shown.returncode == 0 and "flags:" in shown.stdout, (command, shown.stderr[-2000:])
  trained = run(
    bin_dir / "stss-train",
    "--config=configs/default.py:tiny",
    f"--workdir={tmp_path / 'run'}",
    "--config.total_steps=2",
  )
  assert trained.returncode == 0, trained.stderr[-3000:]
  assert "validation: top-1" in trained.stdout
  assert (tmp_path / "run" / "model").is_dir()


HIDE_TENSORFLOW = """
import runpy, sys

# How a missing TensorFlow looks to import and to importlib.util.find_spec:
sys.modules["tensorflow"] = None
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow  # two processes without TensorFlow
def test_without_tensorflow_the_demo_trains_and_export_says_how_to_install_it(tmp_path):
  """TensorFlow is left to the environment (pyproject.toml): the synthetic demo needs none (no
  TensorBoard summaries, said once), and a command that needs it says so in one line."""

  def without_tensorflow(*args):
    return subprocess.run(
      [sys.executable, "-c", HIDE_TENSORFLOW, *args],
      cwd=ROOT,
      capture_output=True,
      text=True,
      env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )

  trained = without_tensorflow(
    "stss_jax.main", "--config=configs/default.py:tiny", f"--workdir={tmp_path / 'run'}"
  )
  assert trained.returncode == 0, trained.stderr[-3000:]
  assert "no TensorBoard summaries, metrics.jsonl only" in trained.stderr
  assert (tmp_path / "run" / "metrics.jsonl").exists()
  exported = without_tensorflow(
    "stss_jax.export",
    "--config=configs/default.py:tiny",
    f"--checkpoint={tmp_path / 'run' / 'model'}",
    f"--output={tmp_path / 'exported'}",
  )
  assert exported.returncode == 1
  assert (
    exported.stderr.strip()
    .splitlines()[-1]
    .startswith("error: TensorFlow is not installed; install one build")
  )
  assert "Traceback" not in exported.stderr


@pytest.mark.slow  # a git clone, a venv and a pip install
def test_installs_from_a_git_url(tmp_path):
  """`pip install "stss-jax @ git+URL"`, with a file://localhost URL (the form this pip parses as a
  direct reference) to a clone of this repository's HEAD."""
  clone = tmp_path / "clone"
  subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
  (next((venv / "lib").glob("python3*/site-packages")) / "dependencies.pth").write_text(
    "\n".join(site.getsitepackages()) + "\n"
  )
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
  install = subprocess.run(
    [
      venv / "bin" / "python",
      "-m",
      "pip",
      "install",
      "-q",
      "--no-index",
      "--no-build-isolation",
      f"stss-jax @ git+file://localhost{clone}",
    ],
    env=env,
    cwd=tmp_path,
    capture_output=True,
    text=True,
  )
  assert install.returncode == 0, install.stderr[-3000:]
  where = subprocess.run(
    [
      venv / "bin" / "python",
      "-c",
      "import stss_jax.export, configs.ssv2; print(stss_jax.__file__)",
    ],
    env=env,
    cwd=tmp_path,
    capture_output=True,
    text=True,
  )
  assert where.returncode == 0 and "site-packages" in where.stdout, where.stderr[-3000:]
