"""Accuracy of one model under each corruption and severity, as a table, JSON and a plot.

  python -m stss_jax.robustness --config=configs/default.py --checkpoint=runs/default/model \\
      --output=runs/default/robustness [--corruptions=occlusion,motion_blur] [--severities=1,3,5]

Evaluates the model directory on the config's evaluation split, clean and under every
(corruption, severity) asked for (input_pipeline/corruptions.py; the same corrupted clips as
`main.py --mode=eval --config.eval.corruption=NAME --config.eval.severity=S`). Writes
OUTPUT/robustness.json after each evaluation, so a rerun with the same checkpoint and config
goes on where it stopped, and OUTPUT/robustness.png: top-1 against severity, a line per
corruption, the clean accuracy dashed.
"""

from __future__ import annotations

import json
import sys

from absl import flags
from etils import epath
from tqdm import tqdm

from input_pipeline import corruptions
from input_pipeline.sources import build_source
from stss_jax import cli, evaluation, model_dir
from stss_jax.models import build_model
from stss_jax.predict import predict

RESULTS_FILE = "robustness.json"
PLOT_FILE = "robustness.png"
CLEAN = "clean"


def evaluate(model, config, source, corruption: str | None, severity: int) -> dict:
  """The scalars of one evaluation of the whole evaluation split, corrupted or clean."""
  batches = source.eval_batches(config.batch_size)
  if corruption:
    batches = corruptions.corrupt_batches(batches, corruption, severity, config.seed)
  probabilities, labels = evaluation.split_probabilities(
    batches, lambda batch: predict(model, batch["clips"])
  )
  report = evaluation.classification_report(probabilities, labels, config.dataset.num_classes)
  return {k: float(report[k]) for k in evaluation.SCALARS}


def sweep(
  config,
  checkpoint: str,
  output: str,
  names: list[str],
  severities: list[int],
  progress: bool = True,
) -> dict:
  """Runs (or finishes) the sweep; returns the results written to OUTPUT/robustness.json."""
  for name in names:
    for severity in severities:
      corruptions.check(name, severity)
  output = epath.Path(output)
  output.mkdir(parents=True, exist_ok=True)
  path = output / RESULTS_FILE
  identity = {
    "checkpoint": str(checkpoint),
    "architecture": model_dir.architecture(config),
    "seed": config.seed,
    "evaluation": config.input.to_dict(),
  }
  results = {**identity, "rows": []}
  if path.exists():
    previous = json.loads(path.read_text())
    if all(previous.get(k) == json.loads(json.dumps(v)) for k, v in identity.items()):
      results["rows"] = previous["rows"]
  done = {(row["corruption"], row["severity"]) for row in results["rows"]}
  wanted = [(CLEAN, 0)] + [(n, s) for n in names for s in severities]
  todo = [point for point in wanted if point not in done]
  model = build_model(config)
  model_dir.restore_for_inference(checkpoint, model, config)
  source = build_source(config)
  for name, severity in tqdm(
    todo, desc="robustness", unit="evaluation", disable=not progress, file=sys.stderr
  ):
    scalars = evaluate(model, config, source, None if name == CLEAN else name, severity)
    results["rows"].append({"corruption": name, "severity": severity, **scalars})
    path.write_text(json.dumps(results, indent=1) + "\n")
  path.write_text(json.dumps(results, indent=1) + "\n")
  return results


def table(rows: list[dict]) -> str:
  lines = [
    "| corruption | severity | top-1 | top-5 | mean class accuracy |",
    "|---|---|---|---|---|",
  ]
  for row in sorted(rows, key=lambda r: (r["corruption"] != CLEAN, r["corruption"], r["severity"])):
    lines.append(
      f"| {row['corruption']} | {row['severity']} | {row['top1']:.2%} | {row['top5']:.2%} | "
      f"{row['mean_class_accuracy']:.2%} |"
    )
  return "\n".join(lines)


def plot(rows: list[dict], path: epath.Path, title: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  figure, axes = plt.subplots(figsize=(6, 4))
  clean = [row["top1"] for row in rows if row["corruption"] == CLEAN]
  for name in corruptions.CORRUPTIONS:
    points = sorted((row["severity"], row["top1"]) for row in rows if row["corruption"] == name)
    if points:
      severities, top1 = zip(*points)
      axes.plot(
        (0, *severities) if clean else severities,
        [100 * v for v in ((*clean, *top1) if clean else top1)],
        marker="o",
        label=name.replace("_", " "),
      )
  if clean:
    axes.axhline(100 * clean[0], color="grey", linestyle="--", label="clean")
  axes.set_xlabel("severity (0: clean)")
  axes.set_ylabel("top-1 (%)")
  axes.set_ylim(0, 100)
  axes.set_title(title)
  axes.legend(fontsize=8)
  figure.tight_layout()
  with path.open("wb") as f:
    figure.savefig(f, format="png", dpi=120)
  plt.close(figure)


def define_flags(flag_values: flags.FlagValues, argv) -> None:
  cli.define_config(flag_values, argv)
  flags.DEFINE_string(
    "checkpoint",
    None,
    "Model directory (convert, or the trainer's WORKDIR/model).",
    flag_values=flag_values,
  )
  flags.DEFINE_string(
    "output", None, "Directory for robustness.json and robustness.png.", flag_values=flag_values
  )
  flags.DEFINE_list(
    "corruptions", list(corruptions.CORRUPTIONS), "Corruptions to apply.", flag_values=flag_values
  )
  flags.DEFINE_list(
    "severities",
    [str(s) for s in corruptions.SEVERITIES],
    "Severities, 1..5.",
    flag_values=flag_values,
  )
  flags.DEFINE_boolean(
    "plot", True, "Draw robustness.png (needs matplotlib).", flag_values=flag_values
  )
  flags.mark_flags_as_required(["checkpoint", "output"], flag_values=flag_values)


def run(flag_values: flags.FlagValues) -> int:
  try:
    severities = [int(s) for s in flag_values.severities]
  except ValueError:
    raise ValueError(
      f"--severities={','.join(flag_values.severities)}: give integers 1..5"
    ) from None
  names = list(flag_values.corruptions)
  for name in names:
    if name not in corruptions.CORRUPTIONS:
      raise ValueError(
        f"--corruptions: {name!r} is unknown; use some of {','.join(corruptions.CORRUPTIONS)}"
      )
  for severity in severities:
    if severity not in corruptions.SEVERITIES:
      raise ValueError(f"--severities: {severity} is not one of {corruptions.SEVERITIES}")
  config = flag_values.config
  results = sweep(config, flag_values.checkpoint, flag_values.output, names, severities)
  output = epath.Path(flag_values.output)
  title = f"{config.dataset.name}: {epath.Path(flag_values.checkpoint).name}"
  if flag_values.plot:
    plot(results["rows"], output / PLOT_FILE, title)
  print(table(results["rows"]))
  print(
    f"wrote {output / RESULTS_FILE}" + (f" and {output / PLOT_FILE}" if flag_values.plot else "")
  )
  return 0


def main(argv=None) -> int:
  return cli.main(__doc__, define_flags, run, argv, model_configs={"config": "checkpoint"})


if __name__ == "__main__":
  sys.exit(main())
