"""notebooks/demo.ipynb runs top to bottom (a short training run included) without an error."""
import pathlib

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "demo.ipynb"


def test_demo_notebook_runs_and_learns(monkeypatch):
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
  text = "\n".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for output in cell.get("outputs", []))
  assert "SELFYNet:" in text and "validation top-1" in text
  images = sum("image/png" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", []))
  assert images == 3
  # The short run must beat chance (1/6) and appearance alone (1/3: each class has a time-reversed
  # twin) clearly: the model learned something about motion.
  top1 = float(text.split("validation top-1 ")[1].split("%")[0])
  assert top1 > 40, text[-2000:]
