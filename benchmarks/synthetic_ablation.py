"""TSN vs TSM vs SELFY, and SELFY's window, on the synthetic motion set (normal and fast motion).

  python -m benchmarks.synthetic_ablation --workdir=runs/ablation --output=benchmarks/results/synthetic_ablation.md

Every row is `python main.py --config=configs/default.py` with one override set, trained from
scratch for the default's 600 steps, one run per (variant, motion, seed). Reported: validation
top-1 over the config's classes, direction accuracy on the time-reversed pairs (among clips of a pair
that the model put in that pair, the share given the right one of the two: chance is 50%, the
test that appearance alone cannot solve the task), and wall time. A finished run is read back
from its workdir, so a killed ablation resumes where it stopped.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import pathlib
import subprocess
import sys
import time

import numpy as np

from input_pipeline.synthetic import CLASSES, REVERSED

ROOT = pathlib.Path(__file__).resolve().parents[1]
VARIANTS = {
    "TSN (appearance only)": ["--config.model.selfy_stages=()"],
    "TSM": ["--config.model.selfy_stages=()", "--config.model.temporal_shift=True"],
    "TSN + SELFY (5,5,5) (default)": [],
    "TSN + SELFY (1,9,9)": ["--config.model.selfy.window=(1,9,9)"],
    "TSN + SELFY (3,9,9)": ["--config.model.selfy.window=(3,9,9)"],
    "TSN + SELFY (5,9,9)": ["--config.model.selfy.window=(5,9,9)"],
    "TSN + SELFY (5,3,3)": ["--config.model.selfy.window=(5,3,3)"],
}
MOTIONS = {"normal": 1.0, "fast": 3.0}


def reversed_pair_accuracy(confusion: np.ndarray, class_names: list[str]) -> float:
  pairs = [(class_names.index(CLASSES[a]), class_names.index(CLASSES[b])) for a, b in REVERSED
           if CLASSES[a] in class_names and CLASSES[b] in class_names]
  correct = sum(confusion[a, a] + confusion[b, b] for a, b in pairs)
  within = sum(confusion[np.ix_([a, b], [a, b])].sum() for a, b in pairs)
  return correct / max(within, 1)


def run(workdir: pathlib.Path, overrides: list[str], extra: list[str]) -> dict:
  """Trains one variant (or reads its finished run back) and returns its figures."""
  result_file = workdir / "ablation_result.json"
  if result_file.exists():
    return json.loads(result_file.read_text())
  start = time.perf_counter()
  done = subprocess.run([sys.executable, "main.py", "--config=configs/default.py", f"--workdir={workdir}",
                         *overrides, *extra], cwd=ROOT, capture_output=True, text=True)
  seconds = time.perf_counter() - start
  if done.returncode:
    raise RuntimeError(f"run in {workdir} failed:\n{done.stderr[-3000:]}")
  reports = sorted(workdir.glob("eval_validation_step*.json"), key=lambda p: int(p.stem.rsplit("step", 1)[1]))
  report = json.loads(reports[-1].read_text())
  confusion = np.array(report["confusion"])
  result = {"top1": float(np.trace(confusion) / confusion.sum()), "pairs": reversed_pair_accuracy(confusion, report["class_names"]),
            "seconds": seconds, "step": report["step"]}
  result_file.write_text(json.dumps(result))
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="runs/ablation")
  parser.add_argument("--output", default="")
  parser.add_argument("--seeds", default="0", help="comma-separated seeds; one run per seed")
  parser.add_argument("--parallel", type=int, default=1, help="runs at once (GPU machines: several fit)")
  parser.add_argument("--variants", default="", help="comma-separated indices into the variant list (default all)")
  parser.add_argument("--motions", default="normal,fast")
  parser.add_argument("extra", nargs="*", help="further --config.* overrides for every run (after --)")
  args = parser.parse_args()
  seeds = [int(s) for s in args.seeds.split(",")]
  names = list(VARIANTS)
  if args.variants:
    names = [names[int(i)] for i in args.variants.split(",")]
  motions = args.motions.split(",")
  jobs = {}
  with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
    for name in names:
      for motion in motions:
        for seed in seeds:
          slug = "".join(c if c.isalnum() else "_" for c in name).strip("_")
          workdir = pathlib.Path(args.workdir).resolve() / f"{slug}-{motion}-seed{seed}"
          overrides = VARIANTS[name] + [f"--config.dataset.motion_scale={MOTIONS[motion]}", f"--config.seed={seed}"]
          jobs[(name, motion, seed)] = pool.submit(run, workdir, overrides, args.extra)
    for key, job in jobs.items():
      result = job.result()
      print(f"{key[0]:32s} {key[1]:6s} seed {key[2]}: top-1 {result['top1']:.1%}, reversed pairs "
            f"{result['pairs']:.1%}, {result['seconds']:.0f} s", flush=True)
  results = {key: job.result() for key, job in jobs.items()}
  header = "| model | " + " | ".join(f"{m}: top-1 / reversed pairs / wall" for m in motions) + " |"
  lines = [header, "|---|" + "---|" * len(motions)]
  for name in names:
    cells = []
    for motion in motions:
      runs = [results[(name, motion, seed)] for seed in seeds]
      top1, pairs = np.mean([r["top1"] for r in runs]), np.mean([r["pairs"] for r in runs])
      seconds = np.mean([r["seconds"] for r in runs])
      cells.append(f"{top1:.1%} / {pairs:.1%} / {seconds:.0f} s")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  table = "\n".join(lines)
  print(table)
  if args.output:
    import jax

    device = jax.devices()[0]
    note = (f"Seeds {args.seeds}, {results[next(iter(results))]['step']} steps each; device: "
            f"{getattr(device, 'device_kind', device.platform)} ({jax.device_count()} device(s)), {args.parallel} run(s) "
            f"at once; wall time per run includes start-up and compilation. Command: `python -m "
            f"benchmarks.synthetic_ablation --seeds={args.seeds} --parallel={args.parallel}`.")
    pathlib.Path(args.output).write_text(f"# Synthetic motion ablation\n\n{note}\n\n{table}\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
  main()
