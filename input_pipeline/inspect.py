"""Writes batches exactly as the model receives them, to check the input pipeline by eye.

  python -m input_pipeline.inspect --config=configs/ssv1.py --config.dataset.data_dir=DATA \\
      --split=validation --num_batches=1 --output=batch.npz --png=sheet.png

batch.npz holds `clips` (N, T, H, W, 3) as the pipeline gives them to the step (uint8 pixels from
video sources, normalised float32 from the synthetic one; the first view when evaluation uses
several), `labels` (N,), `ids` (N,) video ids and `frame_indices` (N, T) 0-based
frame indices into each video. --png also draws a contact sheet: one clip a row, with its class.
"""

from __future__ import annotations

import itertools
import sys

import numpy as np
from absl import flags
from PIL import Image, ImageDraw

from input_pipeline import crop_resize, normalization, sources
from input_pipeline.crop_sizes import crop_bounds
from stss_jax import cli

THUMB = 112  # pixels per frame in the contact sheet


def collect(config, split: str, num_batches: int) -> dict[str, np.ndarray]:
  source = sources.build_source(config)
  if split == "train":
    batches = source.train_iterator(0, config.batch_size)
  elif split == "validation":
    batches = source.eval_batches(config.batch_size)
  else:
    raise ValueError(f"--split={split!r}: use 'train' or 'validation'")
  parts = {"clips": [], "labels": [], "ids": [], "frame_indices": []}
  for batch in itertools.islice(batches, num_batches):
    keep = batch["mask"] > 0 if "mask" in batch else np.ones(len(batch["labels"]), bool)
    clips = batch["clips"][:, 0] if batch["clips"].ndim == 6 else batch["clips"]
    if (
      "first_resize" in batch
    ):  # raw frames' regions: their first resize, as the train step makes it
      window_hw = crop_bounds(config.input.train_crop, config.input.resize_hw)
      clips = crop_resize.resize_regions(clips, batch["first_resize"], window_hw)
    if "crop_boxes" in batch:  # resize_on_accelerator: resized here as the train step resizes them
      clips = crop_resize.resize_crops(
        clips, batch["crop_boxes"], config.input.image_size, batch["flips"]
      )
    frames = clips.shape[1]
    parts["clips"].append(clips[keep])
    parts["labels"].append(batch["labels"][keep])
    parts["ids"].append(batch["ids"][keep])
    parts["frame_indices"].append(batch["frame_indices"][keep][:, :frames])  # first view's frames
  out = {k: np.concatenate(v) for k, v in parts.items()}
  out["class_names"] = np.array(list(source.class_names))
  return out


def contact_sheet(batch: dict[str, np.ndarray]) -> Image.Image:
  clips = batch["clips"]
  n, t = clips.shape[:2]
  pixels = normalization.to_uint8(clips)
  sheet = Image.new("RGB", (THUMB * t, (THUMB + 16) * n), "white")
  pen = ImageDraw.Draw(sheet)
  for i in range(n):
    top = i * (THUMB + 16)
    name = batch["class_names"][batch["labels"][i]]
    pen.text(
      (4, top + 2),
      f"{batch['ids'][i]}: {name}  frames {batch['frame_indices'][i].tolist()}",
      fill="black",
    )
    for j in range(t):
      sheet.paste(Image.fromarray(pixels[i, j]).resize((THUMB, THUMB)), (j * THUMB, top + 16))
  return sheet


def define_flags(flag_values: flags.FlagValues, argv) -> None:
  cli.define_config(flag_values, argv)
  flags.DEFINE_enum(
    "split",
    "validation",
    ["train", "validation"],
    "Which stream to draw from.",
    flag_values=flag_values,
  )
  flags.DEFINE_integer(
    "num_batches", 1, "Batches to write.", lower_bound=1, flag_values=flag_values
  )
  flags.DEFINE_string("output", None, ".npz file to write.", flag_values=flag_values)
  flags.mark_flag_as_required("output", flag_values=flag_values)
  flags.DEFINE_string("png", None, "Optional contact sheet PNG.", flag_values=flag_values)


def run(flag_values: flags.FlagValues) -> int:
  batch = collect(flag_values.config, flag_values.split, flag_values.num_batches)
  np.savez(flag_values.output, **{k: v for k, v in batch.items() if k != "class_names"})
  print(f"wrote {len(batch['labels'])} clips {batch['clips'].shape} to {flag_values.output}")
  if flag_values.png:
    contact_sheet(batch).save(flag_values.png)
    print(f"wrote {flag_values.png}")
  return 0


def main(argv=None) -> int:
  return cli.main(__doc__, define_flags, run, argv)


if __name__ == "__main__":
  sys.exit(main())
