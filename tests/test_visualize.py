"""The STSS picture: the similarities of a model's first SELFY block against a numpy loop over
its features, the picture's panels against those similarities, and the command."""

import numpy as np
import pytest
from PIL import Image

from configs import default
from input_pipeline import synthetic
from stss_jax import model_dir, visualize
from stss_jax.models import build_model


def naive_stss(features, window):
  """(T, h, w, C) features -> (T, h, w, L, U, V) cosines with the neighbour at (t + l - L//2,
  y + u - U//2, x + v - V//2), zero outside the clip (docs/conventions.md), by a loop."""
  frames, height, width, _ = features.shape
  L, U, V = window
  unit = features / np.sqrt((features.astype(np.float64) ** 2).sum(-1, keepdims=True) + 1e-6)
  out = np.zeros((frames, height, width, L, U, V))
  for t, y, x, l, u, v in np.ndindex(frames, height, width, L, U, V):
    tt, yy, xx = t + l - L // 2, y + u - U // 2, x + v - V // 2
    if 0 <= tt < frames and 0 <= yy < height and 0 <= xx < width:
      out[t, y, x, l, u, v] = unit[t, y, x] @ unit[tt, yy, xx]
  return out


@pytest.fixture(scope="module")
def tiny():
  config = default.get_config("tiny")
  model = build_model(config)
  model.eval()
  clip, _ = synthetic.SyntheticMotion(config.input.num_frames, config.input.image_size).clip(
    "validation", 3
  )
  return config, model, clip


def test_stss_of_the_first_block_is_the_cosine_of_each_query_with_its_window(tiny):
  config, model, clip = tiny
  stss = visualize.stss_of(model, clip)
  assert stss.shape == (4, 4, 4, 3, 5, 5)  # 32x32 clips: stage 1 at 8x8, the block's STSS at 4x4
  block = model.base_model.selfy_after_layer1
  features = block.stss_transformation.downsample(model.base_model.features_after(clip[None], 1))[0]
  np.testing.assert_allclose(
    stss, naive_stss(np.asarray(features), config.model.selfy.window), atol=2e-5
  )


def test_each_panel_draws_the_map_of_its_frame_offset(tiny):
  _, model, clip = tiny
  stss = visualize.stss_of(model, clip)
  query = (1, 2, 1)
  canvas = np.asarray(visualize.draw(clip, stss, query).convert("L"), np.float64)
  L, U, V = stss.shape[3:]
  cell = visualize.CELL
  for l, u, v in np.ndindex(L, U, V):
    y = cell + 24 + int((u + 0.5) * cell / U)  # centre of map cell (u, v) in panel l
    x = l * cell + int((v + 0.5) * cell / V)
    assert abs(canvas[y, x] - (stss[query][l, u, v] + 1) / 2 * 255) <= 1.5, (l, u, v)


def test_command_writes_the_picture_of_a_model_directory_and_names_a_bad_query(
  tmp_path, capsys, tiny
):
  config, model, _ = tiny
  model_dir.save(tmp_path / "model", model, config)
  base = ["visualize", "--config=configs/default.py:tiny", f"--checkpoint={tmp_path / 'model'}"]
  assert visualize.main([*base, f"--output={tmp_path / 'stss.png'}"]) == 0
  assert "wrote" in capsys.readouterr().out
  with Image.open(tmp_path / "stss.png") as image:
    assert image.size == (4 * visualize.CELL, 2 * visualize.CELL + 24)
  assert visualize.main([*base, "--query=9,0,0", f"--output={tmp_path / 'x.png'}"]) == 1
  assert "--query=9,0,0 must be t,y,x inside the STSS grid 4x4x4" in capsys.readouterr().err
  assert not (tmp_path / "x.png").exists()
