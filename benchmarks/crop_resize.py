"""The train step's crop resize (config.input.resize_on_accelerator) alone, by product precision.

  python -m benchmarks.crop_resize        # on a GPU machine; prints a markdown table

A batch of 32 clips of 8 frames, uint8 240 x 240 windows with crops of the multi-scale sides
and random flips (benchmarks.train_step.padded_crops), resized to 224 x 224 by
input_pipeline.crop_resize, jitted,
median over fresh batches (benchmarks.timing.time_jax). Each precision's pixels are compared
with numpy's float32 resize of the same crops (the host's, as `inspect` uses): the share of pixels
that differ and the largest difference, in levels.
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np

from benchmarks.timing import time_jax
from benchmarks.train_step import frame_regions, padded_crops
from input_pipeline.crop_resize import resize_crops, resize_regions

PRECISIONS = {
  "highest": "highest",  # float32 products
  "bf16x3": jax.lax.DotAlgorithmPreset.BF16_BF16_F32_X3,  # crop_resize's default
  "tf32": jax.lax.DotAlgorithmPreset.TF32_TF32_F32,
  "default": jax.lax.Precision.DEFAULT,
}


def main(argv=None):
  parser = argparse.ArgumentParser()
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--frames", type=int, default=8)
  parser.add_argument("--precisions", default=",".join(PRECISIONS))
  args = parser.parse_args(argv)
  rng = np.random.default_rng(0)
  batches = [padded_crops(rng, args.batch, args.frames) for _ in range(3)]
  inputs = [(b["clips"], b["crop_boxes"], b["flips"]) for b in batches]
  host = [
    resize_crops(np.asarray(clips), np.asarray(boxes), 224, np.asarray(flips))
    for clips, boxes, flips in inputs
  ]
  print(
    f"device: {jax.devices()[0].device_kind}; jax {jax.__version__}; batch {args.batch} x "
    f"{args.frames} "
    "frames, 240 x 240 -> 224 x 224",
    flush=True,
  )
  print(
    "| precision | ms per batch | pixels unlike the host's | largest difference (levels) "
    "|\n|---|---|---|---|"
  )
  for name in args.precisions.split(","):
    resize = jax.jit(
      lambda clips, boxes, flips, p=PRECISIONS[name]: resize_crops(
        clips, boxes, 224, flips, precision=p
      )
    )
    seconds = time_jax(resize, inputs, repeats=20)
    differences = [np.abs(np.asarray(resize(*args), np.int16) - h) for args, h in zip(inputs, host)]
    unlike = np.mean([np.mean(d > 0) for d in differences])
    print(
      f"| {name} | {seconds * 1e3:.3f} | {unlike:.2e} | {max(int(d.max()) for d in differences)} |",
      flush=True,
    )
  # Raw SSv2-sized frames: their regions resized to the windows first, then as above (default
  # precision).
  regions = [frame_regions(rng, args.batch, args.frames) for _ in range(3)]
  both = jax.jit(
    lambda clips, first, boxes, flips: resize_crops(
      resize_regions(clips, first, (240, 240)), boxes, 224, flips
    )
  )
  seconds = time_jax(
    both,
    [(r["clips"], r["first_resize"], r["crop_boxes"], r["flips"]) for r in regions],
    repeats=20,
  )
  print(
    f"\nraw frame regions {regions[0]['clips'].shape[2:4]} -> 240 x 240 windows -> 224 x 224, "
    "bf16x3: "
    f"{seconds * 1e3:.3f} ms per batch",
    flush=True,
  )


if __name__ == "__main__":
  sys.exit(main())
