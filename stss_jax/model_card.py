"""Model cards: the README.md of a model directory, written from the run's own records.

A card says what the model is, what it was trained on and how (the command line), what it
scored on validation (the final and the best evaluation, with their steps), which code made it,
and how to use it. The trainer writes one into WORKDIR/model; convert writes one that says where
the weights came from.
"""

from __future__ import annotations

import importlib.metadata
import pathlib
import shlex
import subprocess

from stss_jax import cli, evaluation

PACKAGE = "stss-jax"


def code_version() -> str:
  """The package version, and the git commit (with a mark for local changes) of a checkout."""
  try:
    version = importlib.metadata.version(PACKAGE)
  except importlib.metadata.PackageNotFoundError:
    version = "not installed (run from a checkout)"
  checkout = pathlib.Path(__file__).resolve().parents[1]
  commit = None
  if (checkout / ".git").exists():
    try:
      head = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        timeout=10,
      )
      changed = subprocess.run(
        ["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=10,
      )
      if head.returncode == 0:
        commit = head.stdout.strip() + (" with local changes" if changed.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):  # no git on this machine
      commit = None
  return f"{PACKAGE} {version}" + (f", git commit {commit}" if commit else "")


def describe(config) -> str:
  """One line of what the network is: backbone, temporal shift, SELFY blocks."""
  model = config.model
  shift = "TSM" if model.temporal_shift else "TSN"
  if model.selfy_stages:
    selfy = model.selfy
    stages = ", ".join(map(str, model.selfy_stages))
    block = (
      f" with SELFY after stage {stages} (window {tuple(selfy.window)}, "
      f"{selfy.extractor} extractor)"
    )
  else:
    block = " without SELFY"
  return f"SELFYNet: {shift} ResNet-{model.depth} (width {model.width}){block}"


def _inputs(config) -> str:
  clip = config.input
  sampling = "dense sampling" if clip.dense_sampling else "TSN segments"
  return (
    f"{clip.num_frames} frames ({sampling}) resized to {tuple(clip.resize_hw)}, "
    f"{clip.image_size}x{clip.image_size} crops; evaluated on {clip.eval_clips} clip(s) x "
    f"{clip.eval_crops} crop(s) per video"
  )


def _evaluation_row(label: str, step: int, scores: dict) -> str:
  cells = " | ".join(
    f"{scores[k]:.2%}" if k != "loss" else f"{scores[k]:.4f}" for k in evaluation.SCALARS
  )
  return f"| {label} | {step} | {cells} |"


def _usage(directory: str) -> list[str]:
  quoted = shlex.quote(str(directory))
  return [
    "## Use it",
    "",
    "```",
    f"python -m stss_jax.predict --checkpoint={quoted} --video=VIDEO",
    f"python -m stss_jax.export --checkpoint={quoted} --output=SAVED_MODEL",
    f"python main.py --mode=eval --checkpoint={quoted} --config.dataset.data_dir=DATA",
    "```",
    "",
    "No `--config` is needed: `model_config.json` records the config it was trained with and its "
    "class names. `--config.KEY=VALUE` changes what may differ at inference (evaluation views, "
    "data dir, batch size).",
  ]


def training_card(
  config,
  directory,
  evaluations: dict[int, dict],
  final_step: int,
  train_clips: int | None,
  command: list[str] | None = None,
) -> str:
  """The card of a model the trainer exported after `final_step` steps. evaluations: step ->
  evaluation.SCALARS of every evaluation the run recorded."""
  command = cli.command_line() if command is None else command
  if command and command[0].endswith(".py"):
    command = ["python", *command]
  dataset = config.dataset
  clips = f"{train_clips:,} training clips" if train_clips else "clips drawn procedurally"
  lines = [
    f"# {describe(config)}, trained on {dataset.name}",
    "",
    f"- **Classes:** {dataset.num_classes}.",
    f"- **Input:** {_inputs(config)}.",
    f"- **Data:** {dataset.name} ({clips})"
    + (f", from `{dataset.data_dir}`." if dataset.data_dir else "."),
    f"- **Training:** {final_step} steps of {config.batch_size} clips, "
    f"{config.optimizer.name} with the {config.optimizer.schedule} schedule.",
    f"- **Command:** `{shlex.join(str(a) for a in command)}`",
    f"- **Code:** {code_version()}.",
    "",
    "## Validation",
    "",
  ]
  if evaluations:
    best = max(sorted(evaluations), key=lambda step: evaluations[step]["top1"])
    last = max(evaluations)
    lines += [
      "| | step | " + " | ".join(evaluation.SCALARS) + " |",
      "|---" * (2 + len(evaluation.SCALARS)) + "|",
      _evaluation_row("final", last, evaluations[last]),
      _evaluation_row("best", best, evaluations[best]),
      "",
      f"These are the weights of step {final_step}; the best checkpoint is step {best} in the "
      "run's checkpoints/.",
    ]
  else:
    lines.append("The run recorded no evaluation.")
  return "\n".join([*lines, "", *_usage(directory), ""])


def converted_card(config, directory, source: str, kind: str) -> str:
  """The card of a model directory that convert wrote from PyTorch weights."""
  lines = [
    f"# {describe(config)}, converted from PyTorch",
    "",
    f"- **Weights:** `{source}` ({kind} format), converted by `python -m stss_jax.convert`.",
    f"- **Classes:** {config.dataset.num_classes}.",
    f"- **Input:** {_inputs(config)}.",
    f"- **Code:** {code_version()}.",
    "- **Validation:** none recorded here; evaluate it with `--mode=eval` below.",
    "",
  ]
  return "\n".join([*lines, *_usage(directory), ""])
