"""Draws a clip beside the STSS its SELFY block sees, for one query point.

  python -m stss_jax.visualize --config=configs/default.py --checkpoint=runs/default/model \\
      --output=stss.png [--clip=clip.npy] [--query=t,y,x]

Top row: the clip's frames, the query point marked in the query frame. Below: for each l, the
(u, v) map of cosine similarities between the query and its neighbourhood in frame t + offset
(the centred window's offsets are -(L//2)..L//2; bright = similar), as the first SELFY block
computes it. Without --clip a clip of the synthetic dataset is drawn; without --checkpoint the
model is freshly initialised.
"""

from __future__ import annotations

import sys

import jax.numpy as jnp
import numpy as np
from absl import flags
from etils import epath
from flax import nnx
from PIL import Image, ImageDraw

from input_pipeline import normalization, synthetic
from input_pipeline.arrays import load_clips
from stss_jax import cli, model_dir
from stss_jax.models import build_model
from stss_jax.models.selfynet import selfy_name

CELL = 96  # pixels per frame and per similarity map


def stss_of(model, clip: np.ndarray) -> np.ndarray:
  """(T, h, w, L, U, V) similarities of the first SELFY block for one clip (T, H, W, 3)."""
  backbone = model.base_model
  if not backbone.selfy_stages:
    raise ValueError("config.model.selfy_stages is empty: this model has no SELFY block to draw")
  first = min(backbone.selfy_stages)

  def forward(model, clips):
    features = model.base_model.features_after(clips.astype(model.dtype), first)
    return getattr(model.base_model, selfy_name(first)).stss_transformation(features)

  model.eval()
  return np.asarray(nnx.jit(forward)(model, jnp.asarray(clip[None])), np.float32)[0]


def first_block_offsets(model) -> tuple[int, ...]:
  """The temporal offsets of the first SELFY block's STSS, in the order of its l axis."""
  backbone = model.base_model
  return getattr(
    backbone, selfy_name(min(backbone.selfy_stages))
  ).stss_transformation.temporal_offsets


def _centred(L: int) -> tuple[int, ...]:
  return tuple(range(-(L // 2), L // 2 + 1))


def moving_query(stss: np.ndarray, offsets: tuple[int, ...] | None = None) -> tuple[int, int, int]:
  """A query in the middle frame where something moves: the position least similar to itself in
  the nearest other frame (offset -1, else the smallest non-zero one; the centre of that map);
  the grid centre when the STSS compares no other frame."""
  frames, h, w, L, U, V = stss.shape
  offsets = offsets or _centred(L)
  t0 = frames // 2
  others = [o for o in offsets if o != 0]
  if not others:
    return t0, h // 2, w // 2
  nearest = offsets.index(min(others, key=lambda o: (abs(o), o > 0)))
  y, x = np.unravel_index(np.argmin(stss[t0, :, :, nearest, U // 2, V // 2]), (h, w))
  return t0, int(y), int(x)


def draw(
  clip: np.ndarray,
  stss: np.ndarray,
  query: tuple[int, int, int],
  offsets: tuple[int, ...] | None = None,
) -> Image.Image:
  t0, y0, x0 = query
  frames, h, w, L, U, V = stss.shape
  offsets = offsets or _centred(L)
  pixels = normalization.to_uint8(clip)
  canvas = Image.new("RGB", (CELL * max(frames, L), CELL * 2 + 24), "white")
  pen = ImageDraw.Draw(canvas)
  for t in range(frames):
    canvas.paste(Image.fromarray(pixels[t]).resize((CELL, CELL)), (t * CELL, 0))
  cy, cx = (y0 + 0.5) * CELL / h, (x0 + 0.5) * CELL / w
  pen.ellipse((t0 * CELL + cx - 4, cy - 4, t0 * CELL + cx + 4, cy + 4), outline="red", width=2)
  for l in range(L):
    similarity = (stss[t0, y0, x0, l] + 1) / 2  # cosine in [-1, 1] -> [0, 1]
    image = Image.fromarray((similarity * 255).astype(np.uint8)).resize((CELL, CELL), Image.NEAREST)
    canvas.paste(image.convert("RGB"), (l * CELL, CELL + 24))
    pen.text((l * CELL + 4, CELL + 6), f"frame t{offsets[l]:+d}", fill="black")
  return canvas


def define_flags(flag_values: flags.FlagValues, argv) -> None:
  cli.define_config(flag_values, argv)
  flags.DEFINE_string(
    "checkpoint",
    None,
    "Model directory (optional: a fresh model otherwise).",
    flag_values=flag_values,
  )
  flags.DEFINE_string(
    "clip",
    None,
    ".npy of normalised clips (N, T, H, W, 3); the first is drawn.",
    flag_values=flag_values,
  )
  flags.DEFINE_string(
    "query",
    None,
    "t,y,x of the query in the STSS grid (default: where it moves).",
    flag_values=flag_values,
  )
  flags.DEFINE_string("output", "stss.png", "PNG file to write.", flag_values=flag_values)


def run(flag_values: flags.FlagValues) -> int:
  config = flag_values.config
  if flag_values.clip:
    clip = load_clips(flag_values.clip)[0]
  else:
    motions = synthetic.SyntheticMotion(
      config.input.num_frames,
      config.input.image_size,
      config.seed,
      config.dataset.motion_scale,
      tuple(config.dataset.classes),
    )
    clip, _ = motions.clip("validation", 0)  # a validation clip of the config's own classes
  model = build_model(config)
  if flag_values.checkpoint:
    model_dir.restore_for_inference(flag_values.checkpoint, model, config)
  stss = stss_of(model, clip)
  offsets = first_block_offsets(model)
  frames, h, w = stss.shape[:3]
  query = moving_query(stss, offsets)
  if flag_values.query:
    try:
      query = tuple(int(v) for v in flag_values.query.split(","))
    except ValueError:
      query = ()
    if len(query) != 3 or not all(0 <= q < n for q, n in zip(query, (frames, h, w))):
      raise ValueError(
        f"--query={flag_values.query} must be t,y,x inside the STSS grid {frames}x{h}x{w}"
      )
  with epath.Path(flag_values.output).open("wb") as f:  # a local or gs:// path
    draw(clip, stss, query, offsets).save(f, format="PNG")
  print(f"wrote {flag_values.output}: query (t, y, x) = {query} of a {frames}x{h}x{w} STSS grid")
  return 0


def main(argv=None) -> int:
  return cli.main(__doc__, define_flags, run, argv, model_configs={"config": "checkpoint"})


if __name__ == "__main__":
  sys.exit(main())
