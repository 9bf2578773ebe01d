"""The ablation page's figures: reversed-pair accuracy and the tables written from the runs' own
result files."""

import argparse
import json

import numpy as np

from benchmarks import synthetic_ablation as ablation
from input_pipeline.synthetic import CLASSES


def test_reversed_pair_accuracy_counts_only_clips_kept_within_their_pair():
  names = list(CLASSES[:6])
  confusion = np.zeros((6, 6), int)
  confusion[0, 0], confusion[0, 1], confusion[1, 1], confusion[1, 0] = (
    8,
    2,
    5,
    5,
  )  # right/left: 13 of 20
  confusion[2, 2], confusion[3, 3], confusion[2, 4] = 4, 4, 7  # down/up: 8 of 8; 7 leave the pair
  confusion[4, 5], confusion[5, 4] = 3, 3  # approaching/receding: 0 of 6
  assert ablation.reversed_pair_accuracy(confusion, names) == (13 + 8 + 0) / (20 + 8 + 6)


def _write_run(root, overrides, motion, seed, top1, pairs, robustness=None):
  folder = root / ablation.run_key(overrides, motion, seed)
  folder.mkdir(parents=True)
  result = {"top1": top1, "pairs": pairs, "seconds": 1.0, "step": 600, "overrides": overrides}
  if robustness:
    result["robustness"] = robustness
  (folder / "ablation_result.json").write_text(json.dumps(result))


def test_summary_tables_give_mean_spread_and_seeds_of_each_row_from_the_result_files(tmp_path):
  tsm = next(o for _, name, o, _ in ablation.ROWS if name == "TSM")
  for seed, top1 in enumerate([0.5, 0.7, 0.9]):
    _write_run(tmp_path, tsm, "normal", seed, top1, 0.6)
  _write_run(
    tmp_path,
    [],
    "normal",
    0,
    0.25,
    0.5,
    robustness=[
      {"corruption": "clean", "severity": 0, "top1": 0.25},
      {"corruption": "occlusion", "severity": 3, "top1": 0.125},
    ],
  )
  args = argparse.Namespace(workdir=str(tmp_path), plots="")
  text = ablation.summarize(args)
  tsm_line = next(line for line in text.splitlines() if line.startswith("| TSM |"))
  spread = 100 * np.std([0.5, 0.7, 0.9], ddof=1)
  assert tsm_line == f"| TSM | 70.0% ± {spread:.1f} (n=3) | 60.0% ± 0.0 (n=3) | 50.0, 70.0, 90.0 |"
  # The default recipe's one run stands in every group whose row has no overrides.
  assert "| TSN + SELFY | 25.0% (n=1) | 50.0% (n=1) | 25.0 |" in text
  assert "| conv (default) | 25.0% (n=1) |" in text
  assert "| TSN (appearance only) | not run | not run | - |" in text
  assert "| TSN + SELFY | occlusion | 25.0% (n=1) | 12.5% (n=1) |" in text


def test_summary_page_keeps_its_own_text_above_the_tables(tmp_path, monkeypatch, capsys):
  _write_run(tmp_path / "runs", [], "normal", 0, 0.25, 0.5)
  page = tmp_path / "page.md"
  page.write_text(f"# Title\n\nDevice and date.\n\n{ablation.TABLES_MARKER}\n\nold tables\n")
  monkeypatch.setattr(
    "sys.argv",
    ["synthetic_ablation", f"--workdir={tmp_path / 'runs'}", "--summarize", f"--output={page}"],
  )
  ablation.main()
  written = page.read_text()
  assert written.startswith("# Title\n\nDevice and date.\n\n" + ablation.TABLES_MARKER)
  assert "old tables" not in written and "| TSN + SELFY | 25.0% (n=1) |" in written


def test_the_runs_file_kept_beside_the_page_gives_the_same_tables(tmp_path, monkeypatch):
  _write_run(tmp_path / "runs", [], "normal", 0, 0.25, 0.5)
  _write_run(tmp_path / "runs", [], "normal", 1, 0.75, 1.0)
  page = tmp_path / "page.md"
  monkeypatch.setattr(
    "sys.argv",
    ["synthetic_ablation", f"--workdir={tmp_path / 'runs'}", "--summarize", f"--output={page}"],
  )
  ablation.main()
  from_runs = page.read_text()
  runs_file = tmp_path / "page.runs.json"
  assert set(json.loads(runs_file.read_text())) == {
    ablation.run_key([], "normal", 0),
    ablation.run_key([], "normal", 1),
  }
  page.unlink()
  monkeypatch.setattr(
    "sys.argv", ["synthetic_ablation", f"--workdir={runs_file}", "--summarize", f"--output={page}"]
  )
  ablation.main()
  assert page.read_text() == from_runs and "| TSN + SELFY | 50.0% ± 35.4 (n=2) |" in from_runs


def test_training_curve_averages_the_training_rows_of_each_bin_of_steps(tmp_path):
  metrics = tmp_path / "metrics.jsonl"
  rows = [
    {"step": 10, "split": "train", "loss": 1.0, "top1": 0.0},
    {"step": 20, "split": "train", "loss": 3.0, "top1": 0.5},
    {"step": 20, "split": "validation", "loss": 9.0, "top1": 1.0},  # not training: left out
    {"step": 30, "split": "train", "loss": 0.5, "top1": 1.0},
    {"step": 40, "split": "train", "top1": 1.0},
  ]  # no loss: left out
  metrics.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  assert ablation.training_curve(metrics, bin_steps=20) == [[20, 2.0, 0.25], [40, 0.5, 1.0]]


def test_summary_draws_the_learning_curves_of_the_runs_that_kept_metrics(tmp_path):
  name = ablation.CURVE_ROWS[0]
  overrides = next(o for _, n, o, _ in ablation.ROWS if n == name)
  _write_run(tmp_path, overrides, "normal", 0, 0.2, 0.5)
  folder = tmp_path / ablation.run_key(overrides, "normal", 0)
  (folder / "metrics.jsonl").write_text(
    "".join(
      json.dumps({"step": s, "split": "train", "loss": 1.0, "top1": s / 200}) + "\n"
      for s in range(10, 201, 10)
    )
  )
  plots = tmp_path / "plots"
  ablation.summarize(argparse.Namespace(workdir=str(tmp_path), plots=str(plots)))
  found = ablation.collect(tmp_path)[folder.name]
  assert [step for step, _, _ in found["train_curve"]] == [50, 100, 150, 200]
  assert found["train_curve"][-1][2] == np.mean([s / 200 for s in range(160, 201, 10)])
  assert (plots / "synthetic_learning_curves.png").stat().st_size > 10_000
  assert (plots / "synthetic_ablation.png").exists()
