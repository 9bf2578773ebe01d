"""The tree is linted and formatted as pyproject.toml's [tool.ruff] says: a test fails on an
unformatted or lint-failing file, so style is settled by the tool, not in review."""

import pathlib
import re
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


# Library code says why and what is; figures go stale the day the code changes, so they live in
# benchmarks/results/ and docs/, which comments name instead.
DIARY = re.compile(r"session \d|\bspell\b|\d+(\.\d+)? ?(ms|GiB)\b")


def _files(*folders: str, suffixes=(".py",)) -> list[pathlib.Path]:
  return sorted(
    path for folder in folders for path in (ROOT / folder).rglob("*") if path.suffix in suffixes
  )


def test_library_code_quotes_no_timings_sizes_or_sessions():
  found = [
    f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
    for path in _files("stss_jax", "input_pipeline", "configs")
    for number, line in enumerate(path.read_text().splitlines(), start=1)
    if DIARY.search(line)
  ]
  assert not found, "\n".join(found)


def test_the_code_and_tests_cite_only_files_of_this_repository():
  # Spelled apart, so that this file holds neither.
  outside = ("shared" + "/", "CONVENTIONS" + ".md")
  found = [
    f"{path.relative_to(ROOT)}:{number}"
    for path in _files("stss_jax", "input_pipeline", "configs", "tests", suffixes=(".py", ".md"))
    for number, line in enumerate(path.read_text().splitlines(), start=1)
    if any(name in line for name in outside)
  ]
  assert not found, "\n".join(found)


def test_the_diary_pattern_finds_what_it_is_meant_to():
  assert all(
    DIARY.search(s) for s in ("7.6 ms forward", "session 21", "a slow spell", "80 GiB", "1.5ms")
  )
  assert not any(DIARY.search(s) for s in ("msgpack", "items", "the GiB unit", "spelling"))
