"""Shared test helpers: where the authors' fixtures live, and skipping when they are absent."""
import pathlib

import pytest

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"


def require_shared(path: pathlib.Path) -> pathlib.Path:
  """Skips the calling test, with the reason, when a file from ../shared is absent."""
  if not path.exists():
    pytest.skip(f"{path} not found: it ships beside the project in CI, not in a clone")
  return path
