"""The PyTorch formulation of SELFYNet-R50 and TSM-R50, trained on the same GPU: the baseline row
beside benchmarks.train_step.

  python -m benchmarks.torch_train_step [--batches=32,8] [--modes=eager,compiled]   # GPU and torch

The network is tests/torch_reference.py (the official module layout, NCHW, frames folded into
the batch), with its STSS replaced by the authors' fast fallback (full frame-pair correlation,
then a gather of each window: benchmarks.stss_op.torch_stss), as their code runs without the
spatial-correlation-sampler package. A step: bf16 autocast forward, cross-entropy, backward,
SGD with momentum 0.9 and weight decay 5e-4; random device-resident clips at 8x224x224, median of
CUDA-event timings after warm-up.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch import nn

from benchmarks.stss_op import torch_stss
from tests import torch_reference


def fast_transformation(module: torch_reference.STSSTransformation, batch: int):
  """Swaps the reference's loop-and-index STSS for the fallback formulation, same output layout."""
  frames, (L, U, V) = module.frames, module.window

  def forward(x):
    x = module.downsample(x)
    nt, c, h, w = x.shape
    stss = torch_stss("cuda", (batch, frames, h, w, c), (L, U, V))(x)  # (B, T, L, HW, U*V)
    return stss.view(batch, frames, L, h, w, U, V).permute(0, 1, 3, 4, 2, 5, 6)

  module.forward = forward


def measure(selfy: bool, batch: int, frames: int, repeats: int, compiled: bool = False) -> dict:
  model = (
    torch_reference.TSN(174, frames, 50, shift=True, selfy_after=2 if selfy else None)
    .cuda()
    .train()
  )
  if selfy:
    fast_transformation(model.base_model.selfy.stss_transformation, batch)
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
  forward = torch.compile(model) if compiled else model
  pool = [
    (
      torch.randn(batch, frames, 3, 224, 224, device="cuda"),
      torch.randint(0, 174, (batch,), device="cuda"),
    )
    for _ in range(3)
  ]

  def step(clips, labels):
    with torch.autocast("cuda", dtype=torch.bfloat16):
      loss = nn.functional.cross_entropy(forward(clips), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

  for i in range(6 if compiled else 3):  # torch.compile compiles on the first calls
    step(*pool[i % 3])
  torch.cuda.synchronize()
  times = []
  for r in range(repeats):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for i in range(5):
      step(*pool[(r + i) % 3])
    end.record()
    torch.cuda.synchronize()
    times.append(start.elapsed_time(end) / 5)
  ms = statistics.median(times)
  return {
    "model": ("SELFYNet-R50" if selfy else "TSM-R50") + (", torch.compile" if compiled else ""),
    "batch": batch,
    "train clips/s": batch / ms * 1e3,
    "step ms": ms,
    "peak GiB": torch.cuda.max_memory_allocated() / 2**30,
  }


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", default="32,8")
  parser.add_argument("--frames", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument(
    "--modes", default="eager", help="comma-separated, of eager and compiled (torch.compile)"
  )
  args = parser.parse_args(argv)
  modes = args.modes.split(",")
  if not set(modes) <= {"eager", "compiled"}:
    parser.error(f"--modes={args.modes}: use eager, compiled or both")
  torch.backends.cudnn.benchmark = True
  print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; bf16 autocast")
  # Rows print as they are measured, so that a run cut short keeps what it measured.
  print("| model (PyTorch) | batch | train clips/s | step ms | peak GiB |\n|---|---|---|---|---|")
  for batch in map(int, args.batches.split(",")):
    for mode in modes:
      for selfy in (False, True):
        row = measure(selfy, batch, args.frames, args.repeats, mode == "compiled")
        print(
          f"| {row['model']} | {row['batch']} | {row['train clips/s']:.1f} | "
          f"{row['step ms']:.1f} | {row['peak GiB']:.1f} |",
          flush=True,
        )


if __name__ == "__main__":
  main()
