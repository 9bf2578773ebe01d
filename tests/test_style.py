"""The tree is linted and formatted as pyproject.toml's [tool.ruff] says: a test fails on an
unformatted or lint-failing file, so style is settled by the tool, not in review."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_is_clean(command):
  done = subprocess.run(
    [sys.executable, "-m", "ruff", *command, "."], cwd=ROOT, capture_output=True, text=True
  )
  assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
