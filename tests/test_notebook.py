"""notebooks/demo.ipynb runs top to bottom as on Colab: in a fresh runtime that has its own jax,
numpy and tensorflow, away from any checkout, its first cell installs the package from REPO and
nothing else, and every cell runs, draws its pictures and reports.

The runtime is a fresh venv that sees this test environment's packages through a .pth file, as
Colab's preinstalled ones; pip reaches no index (PIP_NO_INDEX) and builds without isolation
(PIP_NO_BUILD_ISOLATION=0, which pip reads as "off"), so nothing is downloaded. The notebook's
short training run does not learn reliably at any step count that a test can afford
(benchmarks/results/notebook.md: 28-88% top-1 over seeds at its default 300 steps), so it runs
for 5 steps (each ~4 s under the tests' unoptimised XLA) and no accuracy is asserted: what is
checked cannot flake.
"""

import json
import os
import pathlib
import shutil
import site
import subprocess
import sys

import pytest

pytest.importorskip("nbclient")
pytest.importorskip("nbformat")

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "demo.ipynb"
TRAIN_STEPS = 5  # fewer than the warm-up's 10: the notebook's loop runs any count
RUNTIME_PACKAGES = ("jax", "jaxlib", "numpy", "tensorflow-cpu", "flax")

EXECUTE = """
import sys, nbclient, nbformat
notebook = nbformat.read(sys.argv[1], as_version=4)
nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                        resources={"metadata": {"path": sys.argv[2]}}).execute()
nbformat.write(notebook, sys.argv[3])
"""

VERSIONS = """
import importlib.metadata, json, sys
print(json.dumps({name: importlib.metadata.version(name) for name in sys.argv[1:]}))
"""


@pytest.mark.slow  # a venv, a pip install and the notebook's kernel
def test_demo_notebook_installs_only_what_the_runtime_lacks_and_runs(tmp_path):
  venv = tmp_path / "runtime"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
  own_packages = next((venv / "lib").glob("python3*/site-packages"))
  (own_packages / "preinstalled.pth").write_text("\n".join(site.getsitepackages()) + "\n")
  python = venv / "bin" / "python"
  repository = tmp_path / "repository"  # what REPO names: a copy, so the build writes nothing here
  shutil.copytree(
    ROOT,
    repository,
    ignore=shutil.ignore_patterns(
      ".git", ".venv", "runs", "__pycache__", "*.egg-info", "build", ".whl"
    ),
  )
  elsewhere = tmp_path / "colab"  # no checkout above it
  elsewhere.mkdir()
  shutil.copy(NOTEBOOK, elsewhere / "demo.ipynb")
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
  env.update(
    PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}",
    JAX_PLATFORMS="cpu",
    DEMO_TRAIN_STEPS=str(TRAIN_STEPS),
    STSS_JAX_REPO=str(repository),
    PIP_NO_INDEX="1",
    PIP_NO_BUILD_ISOLATION="0",
  )

  def versions():
    result = subprocess.run(
      [python, "-c", VERSIONS, *RUNTIME_PACKAGES],
      env=env,
      cwd=elsewhere,
      capture_output=True,
      text=True,
      check=True,
    )
    return json.loads(result.stdout)

  before = versions()
  executed = subprocess.run(
    [python, "-c", EXECUTE, elsewhere / "demo.ipynb", elsewhere, elsewhere / "out.ipynb"],
    env=env,
    cwd=elsewhere,
    capture_output=True,
    text=True,
    timeout=1500,
  )
  assert executed.returncode == 0, executed.stderr[-4000:]
  assert versions() == before
  # The venv's own site-packages gained the package and nothing else.
  added = {p.name for p in own_packages.iterdir()} - {"preinstalled.pth", "__pycache__"}
  assert {"stss_jax", "input_pipeline", "configs"} <= added
  assert all(
    name in ("stss_jax", "input_pipeline", "configs") or name.startswith("stss_jax-")
    for name in added
  ), added

  notebook = json.loads((elsewhere / "out.ipynb").read_text())
  outputs = [
    output
    for cell in notebook["cells"]
    if cell["cell_type"] == "code"
    for output in cell.get("outputs", [])
  ]
  text = "\n".join("".join(output.get("text", "")) for output in outputs)
  assert "installing " in text and f"kept as they are: jax {before['jax']}" in text
  assert f"numpy {before['numpy']}" in text and f"tensorflow-cpu {before['tensorflow-cpu']}" in text
  assert "CPU device(s)" in text
  assert "SELFYNet:" in text
  assert sum("image/png" in output.get("data", {}) for output in outputs) == 3
  top1 = float(text.split(f"after {TRAIN_STEPS} steps: validation top-1 ")[1].split("%")[0])
  assert 0.0 <= top1 <= 100.0
  assert text.count("true: ") == 8  # one prediction line per clip shown
