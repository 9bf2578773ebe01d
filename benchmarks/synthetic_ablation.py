"""The paper's claims at small scale, on the synthetic motion set: backbones, temporal offsets,
window size against speed, extractors, and robustness to corruptions.

  python -m benchmarks.synthetic_ablation --workdir=runs/ablation --seeds=0,1,2 --parallel=14 \\
      --robustness
  python -m benchmarks.synthetic_ablation --workdir=runs/ablation --summarize \\
      --output=benchmarks/results/synthetic_ablation.md            # tables and plots from the runs

Every row is `python main.py --config=configs/default.py` with its overrides, trained from
scratch, one run per (row, motion, seed). A run's figures: validation top-1 over the config's
classes, direction accuracy on the time-reversed pairs (among clips of a pair that the model put
in that pair, the share given the right one of the two: chance is 50%, the test that appearance
alone cannot solve the task), and wall time. With --robustness, the rows of ROBUSTNESS_ROWS are
also evaluated under every corruption at severities 1, 3 and 5 (python -m stss_jax.robustness).
A finished run is read back from its workdir, so a killed study resumes where it stopped; each
run's figures are in WORKDIR/<run>/ablation_result.json, which --summarize reads (plots need
matplotlib).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import time

import numpy as np

from input_pipeline.synthetic import CLASSES, REVERSED

ROOT = pathlib.Path(__file__).resolve().parents[1]
TSN = ["--config.model.selfy_stages=()"]
TSM = ["--config.model.selfy_stages=()", "--config.model.temporal_shift=True"]
# Three times the default's steps (TSM alone needs AdamW and BNs from scale 1 as well: README).
LONG = [
  "--config.total_steps=1800",
  "--config.eval_every_steps=1800",
  "--config.checkpoint_every_steps=600",
]
LONG3600 = [
  "--config.total_steps=3600",
  "--config.eval_every_steps=3600",
  "--config.checkpoint_every_steps=600",
]
# AdamW at 1e-3 for the demo's batch of 16 (the config's rate is per 64 clips)
ADAMW = ["--config.optimizer.name=adamw", "--config.optimizer.learning_rate=0.004"]
MOTIONS = {"normal": 1.0, "fast": 3.0}
# (group, row, overrides, motions)
ROWS = [
  ("backbone", "TSN (appearance only)", TSN, ("normal",)),
  ("backbone", "TSM", TSM, ("normal",)),
  ("backbone", "TSN + SELFY", [], ("normal",)),
  ("backbone", "TSM + SELFY", ["--config.model.temporal_shift=True"], ("normal",)),
  ("backbone", "TSM, 1800 steps", TSM + LONG, ("normal",)),
  (
    "backbone",
    "TSM + SELFY, 1800 steps",
    ["--config.model.temporal_shift=True", *LONG],
    ("normal",),
  ),
  (
    "tsm_recipe",
    "TSM, 1800 steps, half the learning rate",
    TSM + LONG + ["--config.optimizer.learning_rate=0.1"],
    ("normal",),
  ),
  (
    "tsm_recipe",
    "TSM, 1800 steps, twice the learning rate",
    TSM + LONG + ["--config.optimizer.learning_rate=0.4"],
    ("normal",),
  ),
  (
    "tsm_recipe",
    "TSM, 1800 steps, four times the learning rate",
    TSM + LONG + ["--config.optimizer.learning_rate=0.8"],
    ("normal",),
  ),
  ("tsm_recipe", "TSM, 1800 steps, AdamW", TSM + LONG + ADAMW, ("normal",)),
  (
    "tsm_recipe",
    "TSM, 1800 steps, AdamW, residual BNs from scale 1",
    TSM + LONG + ADAMW + ["--config.model.zero_init_residual=False"],
    ("normal",),
  ),
  (
    "tsm_recipe",
    "TSM + SELFY, 1800 steps, AdamW",
    ["--config.model.temporal_shift=True", *LONG, *ADAMW],
    ("normal",),
  ),
  (
    "tsm_recipe",
    "TSM + SELFY, 1800 steps, AdamW, residual BNs from scale 1",
    [
      "--config.model.temporal_shift=True",
      *LONG,
      *ADAMW,
      "--config.model.zero_init_residual=False",
    ],
    ("normal",),
  ),
  (
    "tsm_recipe",
    "TSM, 3600 steps, AdamW, residual BNs from scale 1",
    TSM + LONG3600 + ADAMW + ["--config.model.zero_init_residual=False"],
    ("normal",),
  ),
  ("tsm_recipe", "TSM, 3600 steps", TSM + LONG3600, ("normal",)),
  ("offsets", "offsets (1,)", ["--config.model.selfy.temporal_offsets=(1,)"], ("normal",)),
  ("offsets", "offsets (-1,1)", ["--config.model.selfy.temporal_offsets=(-1,1)"], ("normal",)),
  ("offsets", "offsets (-2..2) (default)", [], ("normal",)),
  ("window", "window (5,3,3)", ["--config.model.selfy.window=(5,3,3)"], ("normal", "fast")),
  ("window", "window (5,5,5) (default)", [], ("normal", "fast")),
  ("window", "window (5,9,9)", ["--config.model.selfy.window=(5,9,9)"], ("normal", "fast")),
  ("extractor", "conv (default)", [], ("normal",)),
  ("extractor", "soft-argmax", ["--config.model.selfy.extractor=soft_argmax"], ("normal",)),
  ("extractor", "MLP", ["--config.model.selfy.extractor=mlp"], ("normal",)),
  (
    "extractor",
    "correlation flow: offsets (1,) + soft-argmax",
    ["--config.model.selfy.temporal_offsets=(1,)", "--config.model.selfy.extractor=soft_argmax"],
    ("normal",),
  ),
]
TABLES_MARKER = (
  "<!-- the tables below are written by python -m benchmarks.synthetic_ablation --summarize -->"
)
GROUP_TITLES = {
  "backbone": "Backbones: does SELFY complement TSM?",
  "tsm_recipe": "TSM alone: steps and learning rate",
  "offsets": "Temporal offsets of the STSS",
  "window": "Spatial window against speed (orange: fast)",
  "extractor": "Feature extractors",
}
ROBUSTNESS_ROWS = ("TSN + SELFY", "TSM, 1800 steps", "TSM + SELFY, 1800 steps")
# Rows whose training accuracy is drawn against the step: how long each leaves chance.
CURVE_ROWS = (
  "TSM, 1800 steps, AdamW",
  "TSM + SELFY, 1800 steps, AdamW",
  "TSM, 3600 steps, AdamW, residual BNs from scale 1",
  "TSM + SELFY, 1800 steps, AdamW, residual BNs from scale 1",
)
CURVE_BIN_STEPS = 50
ROBUSTNESS_SEVERITIES = "1,3,5"


def run_key(overrides: list[str], motion: str, seed: int) -> str:
  """The run's directory name: rows with the same overrides share their runs."""
  slug = "".join(c if c.isalnum() else "_" for c in " ".join(overrides) or "default")
  slug = "_".join(filter(None, slug.split("_")))
  key = f"{slug}-{motion}-seed{seed}"
  if (
    len(key) > 230
  ):  # file names end at 255 bytes: a long slug keeps its start and a digest of the rest
    key = f"{slug[:180]}_{hashlib.sha256(slug.encode()).hexdigest()[:16]}-{motion}-seed{seed}"
  return key


def training_curve(
  metrics_file: pathlib.Path, bin_steps: int = CURVE_BIN_STEPS
) -> list[list[float]]:
  """[last step, mean loss, mean top-1] of the training rows of metrics.jsonl, per bin of steps
  (bin b holds steps b*bin_steps+1 .. (b+1)*bin_steps): the curve, small enough to keep in the runs
  file."""
  bins = {}
  for line in metrics_file.read_text().splitlines():
    row = json.loads(line)
    if row.get("split") == "train" and "loss" in row and "top1" in row:
      bins.setdefault((row["step"] - 1) // bin_steps, []).append((row["loss"], row["top1"]))
  return [[(b + 1) * bin_steps, *np.mean(bins[b], axis=0).tolist()] for b in sorted(bins)]


def reversed_pair_accuracy(confusion: np.ndarray, class_names: list[str]) -> float:
  pairs = [
    (class_names.index(CLASSES[a]), class_names.index(CLASSES[b]))
    for a, b in REVERSED
    if CLASSES[a] in class_names and CLASSES[b] in class_names
  ]
  correct = sum(confusion[a, a] + confusion[b, b] for a, b in pairs)
  within = sum(confusion[np.ix_([a, b], [a, b])].sum() for a, b in pairs)
  return correct / max(within, 1)


def run(
  workdir: pathlib.Path,
  overrides: list[str],
  robustness: bool,
  extra: list[str] = (),
  gpu: int | None = None,
) -> dict:
  """Trains one run (or reads its finished figures back) and returns its figures."""
  result_file = workdir / "ablation_result.json"
  result = json.loads(result_file.read_text()) if result_file.exists() else None
  env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")  # many runs share one GPU
  if gpu is not None:
    env["CUDA_VISIBLE_DEVICES"] = str(gpu)
  if result is None:
    start = time.perf_counter()
    done = subprocess.run(
      [
        sys.executable,
        "main.py",
        "--config=configs/default.py",
        f"--workdir={workdir}",
        *overrides,
        *extra,
      ],
      cwd=ROOT,
      capture_output=True,
      text=True,
      env=env,
    )
    seconds = time.perf_counter() - start
    if done.returncode:
      raise RuntimeError(f"run in {workdir} failed:\n{done.stderr[-3000:]}")
    reports = sorted(
      workdir.glob("eval_validation_step*.json"), key=lambda p: int(p.stem.rsplit("step", 1)[1])
    )
    report = json.loads(reports[-1].read_text())
    confusion = np.array(report["confusion"])
    result = {
      "top1": float(np.trace(confusion) / confusion.sum()),
      "pairs": reversed_pair_accuracy(confusion, report["class_names"]),
      "seconds": seconds,
      "step": report["step"],
      "overrides": overrides,
      "train_curve": training_curve(workdir / "metrics.jsonl"),
    }
    result_file.write_text(json.dumps(result))
  if robustness and "robustness" not in result:
    done = subprocess.run(
      [
        sys.executable,
        "-m",
        "stss_jax.robustness",
        "--config=configs/default.py",
        *overrides,
        *extra,
        f"--checkpoint={workdir / 'model'}",
        f"--output={workdir / 'robustness'}",
        f"--severities={ROBUSTNESS_SEVERITIES}",
        "--noplot",
      ],
      cwd=ROOT,
      capture_output=True,
      text=True,
      env=env,
    )
    if done.returncode:
      raise RuntimeError(f"robustness of {workdir} failed:\n{done.stderr[-3000:]}")
    result["robustness"] = json.loads((workdir / "robustness" / "robustness.json").read_text())[
      "rows"
    ]
    result_file.write_text(json.dumps(result))
  return result


def train(args) -> None:
  seeds = [int(s) for s in args.seeds.split(",")]
  rows = [row for row in ROWS if not args.groups or row[0] in args.groups.split(",")]
  runs = {}
  for _, name, overrides, motions in rows:
    for motion in motions:
      for seed in seeds:
        key = run_key(overrides, motion, seed)
        robust = args.robustness and name in ROBUSTNESS_ROWS and motion == "normal"
        if key not in runs or robust:
          runs[key] = (
            overrides
            + [f"--config.dataset.motion_scale={MOTIONS[motion]}", f"--config.seed={seed}"],
            robust,
          )

  def steps(overrides):
    return max(
      [int(o.split("=")[1]) for o in overrides if o.startswith("--config.total_steps=")], default=0
    )

  # The longest runs first, so that a study cut off by a time limit loses the fewest finished runs.
  order = sorted(runs, key=lambda k: (-steps(runs[k][0]), not runs[k][1]))
  with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
    jobs = {
      key: pool.submit(
        run,
        pathlib.Path(args.workdir).resolve() / key,
        *runs[key],
        args.extra.split(),
        i % args.gpus if args.gpus > 1 else None,
      )
      for i, key in enumerate(order)
    }
    for key, job in jobs.items():
      try:
        result = job.result()
        print(
          f"{key}: top-1 {result['top1']:.1%}, reversed pairs {result['pairs']:.1%}, "
          f"{result['seconds']:.0f} s",
          flush=True,
        )
      except RuntimeError as e:
        print(f"{key}: {e}", flush=True)


def _mean_spread(values: list[float]) -> str:
  if not values:
    return "not run"
  text = f"{100 * np.mean(values):.1f}%"
  if len(values) > 1:
    text += f" ± {100 * np.std(values, ddof=1):.1f}"
  return text + f" (n={len(values)})"


def collect(source: pathlib.Path) -> dict:
  """Every finished run's figures by run key: from a study's workdir, or from the one JSON file
  that --summarize --output keeps beside the page (so that anyone can redo the tables)."""
  if source.is_file():
    return json.loads(source.read_text())
  found = {}
  for result_file in sorted(source.glob("*/ablation_result.json")):
    result = json.loads(result_file.read_text())
    metrics = result_file.parent / "metrics.jsonl"
    if "train_curve" not in result and metrics.exists():  # runs finished before curves were kept
      result["train_curve"] = training_curve(metrics)
    found[result_file.parent.name] = result
  return found


def summarize(args) -> str:
  """Markdown tables (mean ± std over seeds, per-seed top-1) and plots from the runs' figures."""
  found = collect(pathlib.Path(args.workdir))
  seeds = sorted({int(k.rsplit("seed", 1)[1]) for k in found})
  figures = {}
  sections = []
  for group in dict.fromkeys(g for g, *_ in ROWS):
    motions = sorted({m for g, _, _, ms in ROWS if g == group for m in ms}, key=list(MOTIONS).index)
    header = (
      "| row | "
      + " | ".join(f"{m}: top-1 | {m}: reversed pairs | {m}: top-1 per seed" for m in motions)
      + " |"
    )
    lines = [f"### {group}", "", header, "|---|" + "---|---|---|" * len(motions)]
    for g, name, overrides, row_motions in ROWS:
      if g != group:
        continue
      cells = []
      for motion in motions:
        runs = (
          [found[k] for s in seeds if (k := run_key(overrides, motion, s)) in found]
          if motion in row_motions
          else []
        )
        cells += [
          _mean_spread([r["top1"] for r in runs]),
          _mean_spread([r["pairs"] for r in runs]),
          ", ".join(f"{100 * r['top1']:.1f}" for r in runs) or "-",
        ]
        figures[(group, name, motion)] = [r["top1"] for r in runs]
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
    sections.append("\n".join(lines))
  robustness = {}
  for _, name, overrides, _ in ROWS:
    if name in ROBUSTNESS_ROWS:
      for s in seeds:
        result = found.get(run_key(overrides, "normal", s), {})
        for row in result.get("robustness", []):
          robustness.setdefault((name, row["corruption"], row["severity"]), []).append(row["top1"])
  if robustness:
    corruptions = sorted({c for _, c, _ in robustness if c != "clean"})
    severities = sorted({s for _, c, s in robustness if c != "clean"})
    lines = [
      "### robustness (top-1 under each corruption; severity 0 is clean)",
      "",
      "| row | corruption | " + " | ".join(f"severity {s}" for s in [0, *severities]) + " |",
      "|---|---|" + "---|" * (len(severities) + 1),
    ]
    for name in ROBUSTNESS_ROWS:
      for corruption in corruptions:
        clean = robustness.get((name, "clean", 0), [])
        cells = [_mean_spread(clean)] + [
          _mean_spread(robustness.get((name, corruption, s), [])) for s in severities
        ]
        lines.append(f"| {name} | {corruption} | " + " | ".join(cells) + " |")
    sections.append("\n".join(lines))
  curves = {
    name: [
      found[k]["train_curve"]
      for s in seeds
      if "train_curve" in found.get(k := run_key(overrides, "normal", s), {})
    ]
    for _, name, overrides, _ in ROWS
    if name in CURVE_ROWS
  }
  if args.plots:
    _plots(figures, robustness, {n: c for n, c in curves.items() if c}, pathlib.Path(args.plots))
  return "\n\n".join(sections)


def _plots(figures: dict, robustness: dict, curves: dict, folder: pathlib.Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  folder.mkdir(parents=True, exist_ok=True)
  groups = list(dict.fromkeys(g for g, *_ in ROWS))
  columns = 3
  rows = -(-len(groups) // columns)
  # Horizontal bars, so that a row's name reads on one or two lines however many rows a group has.
  figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4.5 * rows), squeeze=False)
  axes = axes.ravel()
  for ax in axes[len(groups) :]:
    ax.set_visible(False)
  for ax, group in zip(axes, groups):
    keys = [k for k in figures if k[0] == group and figures[k]]
    labels = [textwrap.fill(k[1] if k[2] == "normal" else f"{k[1]}, fast", 34) for k in keys]
    for i, key in enumerate(keys):
      values = 100 * np.array(figures[key])
      ax.barh(i, values.mean(), color="tab:orange" if key[2] == "fast" else "tab:blue", alpha=0.6)
      ax.scatter(values, np.full(len(values), i), color="black", s=10, zorder=3)
    ax.set_yticks(range(len(keys)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(100 / 6, color="grey", linestyle=":", linewidth=1)
    ax.set_title(GROUP_TITLES.get(group, group), fontsize=10)
    ax.set_xlim(0, 100)
    ax.set_xlabel("validation top-1 (%): bar mean, dots seeds", fontsize=8)
  figure.tight_layout()
  figure.savefig(folder / "synthetic_ablation.png", dpi=110)
  plt.close(figure)
  if robustness:
    names = list(dict.fromkeys(n for n, _, _ in robustness))
    corruptions = sorted({c for _, c, _ in robustness if c != "clean"})
    figure, axes = plt.subplots(
      1, len(names), figsize=(4.5 * len(names), 4), sharey=True, squeeze=False
    )
    for ax, name in zip(axes[0], names):
      clean = np.mean(robustness.get((name, "clean", 0), [np.nan]))
      for corruption in corruptions:
        points = sorted(
          (s, np.mean(v)) for (n, c, s), v in robustness.items() if n == name and c == corruption
        )
        ax.plot(
          [0] + [s for s, _ in points],
          [100 * clean] + [100 * v for _, v in points],
          marker="o",
          label=corruption.replace("_", " "),
        )
      ax.set_title(name, fontsize=9)
      ax.set_xlabel("severity (0: clean)")
      ax.axhline(100 / 6, color="grey", linestyle=":", linewidth=1)
    axes[0][0].set_ylabel("validation top-1 (%), mean over seeds")
    axes[0][0].set_ylim(0, 100)
    axes[0][-1].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(folder / "synthetic_robustness.png", dpi=110)
    plt.close(figure)
  if curves:
    figure, ax = plt.subplots(figsize=(9, 5))
    for colour, (name, runs) in zip(plt.get_cmap("tab10").colors, curves.items()):
      for i, curve in enumerate(runs):
        steps, _, top1 = np.array(curve).T
        ax.plot(
          steps, 100 * top1, color=colour, linewidth=1.2, alpha=0.8, label=name if i == 0 else None
        )
    ax.axhline(100 / 6, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"training top-1 (%), mean over {CURVE_BIN_STEPS} steps")
    ax.set_ylim(0, 100)
    ax.set_title("Leaving chance: one line per seed", fontsize=10)
    ax.legend(fontsize=8, loc="center right")
    figure.tight_layout()
    figure.savefig(folder / "synthetic_learning_curves.png", dpi=110)
    plt.close(figure)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--workdir",
    default="runs/ablation",
    help="the study's folder, or (--summarize) the .runs.json file kept beside a results page",
  )
  parser.add_argument("--seeds", default="0", help="comma-separated seeds; one run per seed")
  parser.add_argument(
    "--parallel", type=int, default=1, help="runs at once (GPU machines: several fit)"
  )
  parser.add_argument(
    "--gpus", type=int, default=1, help="GPUs to spread the runs over, one GPU a run"
  )
  parser.add_argument("--groups", default="", help="comma-separated groups of ROWS (default all)")
  parser.add_argument(
    "--extra", default="", help="further --config.* overrides for every run (smoke tests)"
  )
  parser.add_argument(
    "--robustness", action="store_true", help="sweep the corruptions for ROBUSTNESS_ROWS"
  )
  parser.add_argument(
    "--summarize", action="store_true", help="tables (and plots) from the finished runs"
  )
  parser.add_argument("--output", default="", help="--summarize: markdown file for the tables")
  parser.add_argument("--plots", default="", help="--summarize: folder for the PNG plots")
  args = parser.parse_args()
  if not args.summarize:
    train(args)
    return
  tables = summarize(args)
  print(tables)
  if args.output:
    output = pathlib.Path(args.output)
    # The page's own text (device, date, what the rows mean) stays; the tables below the marker are
    # replaced.
    head = (
      output.read_text().split(TABLES_MARKER)[0]
      if output.exists()
      else "# Synthetic motion ablation\n\n"
    )
    output.write_text(f"{head}{TABLES_MARKER}\n\n{tables}\n")
    runs_file = output.with_suffix(".runs.json")
    if pathlib.Path(args.workdir).resolve() != runs_file.resolve():
      runs_file.write_text(
        json.dumps(collect(pathlib.Path(args.workdir)), indent=1, sort_keys=True) + "\n"
      )
    print(f"wrote {output} and {runs_file}")


if __name__ == "__main__":
  main()
