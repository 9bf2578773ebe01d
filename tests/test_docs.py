"""What the README and docs/ promise about themselves: the README is a short front door with the
two commands CI and users run; every command they show is accepted by the real command (its
flags parsed and its config loaded, nothing run); the repository is named in one place; every
link points at a file that exists."""

import argparse
import importlib
import pathlib
import re
import shlex
import subprocess
import sys
import tomllib

import pytest

from stss_jax import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").glob("*.md"))]
DEMO = "pip install -r requirements.txt && python main.py --config=configs/default.py"
TESTS = "pip install -r requirements.txt -r requirements-torch.txt && python -m pytest -q tests"
# Programs the pages show that are not this project's (installers, archives, cloud tools).
OTHERS = {"pip", "cat", "tar", "gcloud", "tensorboard", "cd", "git"}


def repository() -> str:
  return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]


def test_the_readme_is_a_short_front_door_with_the_two_commands():
  text = README.read_text()
  assert len(text.splitlines()) <= 200
  assert DEMO in text and TESTS in text
  assert TESTS in (ROOT / ".ci" / "run").read_text()  # CI runs what the README says
  for page in ("datasets", "training", "models", "analyses", "performance", "conventions"):
    assert f"(docs/{page}.md)" in text, page


def test_the_repository_is_named_in_one_place_and_everything_else_follows_it():
  url = repository()
  owner_and_name = url.removeprefix("https://github.com/")
  readme = README.read_text()
  badge = re.search(r"\(https://colab\.research\.google\.com/github/([^)]*)\)", readme).group(1)
  assert badge == f"{owner_and_name}/blob/main/notebooks/demo.ipynb"
  notebook = (ROOT / "notebooks" / "demo.ipynb").read_text()
  assert re.findall(r'REPO = \\"([^"\\]*)\\"', notebook) == [url]
  installs = [m for page in PAGES for m in re.findall(r"git\+(\S+?)[\"`\s]", page.read_text())]
  assert installs and set(installs) == {url}, installs
  citation = (ROOT / "CITATION.cff").read_text()
  assert f'repository-code: "{url}"' in citation


def test_every_relative_link_of_the_pages_names_a_file_that_exists():
  missing = []
  for page in PAGES:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
      if "://" not in target and not (page.parent / target).exists():
        missing.append(f"{page.relative_to(ROOT)}: {target}")
  assert not missing, missing


def shown_commands() -> list[tuple[str, list[str]]]:
  """(page, words) of every command of this project that a page shows, in a bash block or an
  inline code span, continuation lines joined and comments dropped."""
  found = []
  for page in PAGES:
    text = page.read_text()
    pieces = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
      joined = re.sub(r"\\\n\s*", " ", block)
      pieces += [line.split(" #")[0] for line in joined.splitlines() if not line.startswith("#")]
    text_outside = re.sub(r"```.*?```", "", text, flags=re.S)
    pieces += [
      " ".join(span.split())
      for span in re.findall(r"`([^`]+)`", text_outside, flags=re.S)
      if span.startswith(("python ", "stss-"))
    ]
    for piece in pieces:
      for part in re.split(r"&&|;|\|", piece):
        words = shlex.split(part.strip().removeprefix("do ").removesuffix("& done"))
        while words and re.match(r"^[A-Z_]+=", words[0]):  # environment settings
          words = words[1:]
        if not words or words[0] in OTHERS or words[0] in ("for", "done"):
          continue
        if words[:3] == ["python", "-m", "pytest"]:  # the test command: checked beside the README
          continue
        if any("..." in w or w.endswith("=CONFIG") for w in words):  # a placeholder in prose
          continue
        if not any(w.startswith("--") for w in words):  # a command named in prose, not shown
          continue
        found.append((page.name, [w.replace("$i", "0") for w in words]))
  return found


PROJECT = ("stss_jax", "input_pipeline", "benchmarks")


def _module_and_args(words: list[str]) -> tuple[str, list[str]]:
  scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
  if words[0] in scripts:
    return scripts[words[0]].split(":")[0].removesuffix(".__main__"), words[1:]
  assert words[0] == "python", words
  if words[1] == "main.py":
    return "stss_jax.main", words[2:]
  assert words[1] == "-m" and words[2].split(".")[0] in PROJECT, words
  return words[2], words[3:]


class _Parsed(Exception):
  """Raised in place of running a command whose flags were accepted."""


def _parse(module_name: str, args: list[str], monkeypatch) -> None:
  """Parses args against the real command, and stops before it runs."""
  if module_name == "stss_jax.convert":
    module_name = "stss_jax.convert.__main__"
  module = importlib.import_module(module_name)
  source = pathlib.Path(module.__file__).read_text()
  if "cli.main(" in source:
    ran = []
    monkeypatch.setattr(module, "run", lambda flag_values: ran.append(flag_values) or 0)
    # A model directory the page names is not here: its recorded config is replaced by the demo's,
    # and the flags are checked as they are.
    monkeypatch.setattr(
      cli,
      "configs_of_model_directories",
      lambda argv, model_configs: (
        argv
        if not model_configs or any(a.startswith("--config=") for a in argv)
        else [argv[0], "--config=configs/default.py", *argv[1:]]
      ),
    )
    assert module.main([module_name, *args]) == 0
    assert ran
    return
  if "app.run(main)" in source:
    # absl's global flags: ml_collections adds a config's override flags from sys.argv when the
    # module defines them, so the module is imported, and the flags parsed, in a process of its
    # own whose argv is the command's.
    code = f"import sys, {module_name}; from absl import flags; flags.FLAGS(sys.argv)"
    done = subprocess.run(
      [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return
  original = argparse.ArgumentParser.parse_args

  def parse_then_stop(parser, argv=None, namespace=None):
    original(parser, argv, namespace)
    raise _Parsed

  monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
  monkeypatch.setattr("sys.argv", [module_name, *args])
  with pytest.raises(_Parsed):
    module.main(args) if "def main(argv" in source else module.main()


def test_the_pages_show_commands_of_every_kind():
  modules = {_module_and_args(words)[0] for _, words in shown_commands()}
  assert {
    "stss_jax.main",
    "input_pipeline.prepare",
    "stss_jax.predict",
    "stss_jax.export",
    "stss_jax.convert",
    "benchmarks.train_step",
  } <= modules, modules


@pytest.mark.parametrize(
  "page,words", shown_commands(), ids=[" ".join(w)[:80] for _, w in shown_commands()]
)
def test_a_command_the_pages_show_is_accepted_by_the_real_command(page, words, monkeypatch):
  if words[:3] == ["python", "-m", "benchmarks.torch_train_step"]:
    pytest.importorskip("torch")
  _parse(*_module_and_args(words), monkeypatch)


def test_a_wrong_flag_in_a_shown_command_is_caught(monkeypatch):
  with pytest.raises(AssertionError):
    _parse("stss_jax.predict", ["--checkpoint=runs/x/model", "--vidoe=a.webm"], monkeypatch)
  with pytest.raises(SystemExit):
    _parse("benchmarks.stss_op", ["--no_such_flag=1"], monkeypatch)
  with pytest.raises(AssertionError):
    _parse("benchmarks.end_to_end", ["--config=configs/ssv2.py", "--config.no_such=1"], monkeypatch)
  with pytest.raises(AssertionError):
    _parse("stss_jax.main", ["--config=configs/ssv2.py", "--config.no_such_key=1"], monkeypatch)
