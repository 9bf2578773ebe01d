"""The STSS picture: drawn from a model's first SELFY block, and checked against ops.stss."""
import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image

from configs import default
from input_pipeline import synthetic
from stss_jax import visualize
from stss_jax.models import build_model

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_stss_of_the_first_block_is_a_cosine_map_peaking_at_the_query_itself():
  config = default.get_config()
  config.model.width, config.model.selfy.hidden = 8, 8
  clip, _ = synthetic.SyntheticMotion(8, 64).clip("validation", 3)
  stss = visualize.stss_of(build_model(config), clip)
  frames, h, w, L, U, V = stss.shape
  assert (frames, h, w, L, U, V) == (8, 8, 8, 5, 5, 5)
  # The query with itself (l = L//2, centre of the window) has cosine 1 (up to the epsilon).
  np.testing.assert_allclose(stss[:, :, :, L // 2, U // 2, V // 2], 1.0, atol=1e-3)
  assert stss.min() >= -1.0001 and stss.max() <= 1.0001


def test_command_writes_the_picture_and_names_a_bad_query(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  base = [sys.executable, "-m", "stss_jax.visualize", "--config=configs/default.py", "--config.model.width=8",
          "--config.model.selfy.hidden=8"]
  done = subprocess.run([*base, f"--output={tmp_path / 'stss.png'}"], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  with Image.open(tmp_path / "stss.png") as image:
    assert image.size == (8 * visualize.CELL, 2 * visualize.CELL + 24)
  done = subprocess.run([*base, "--query=9,0,0", f"--output={tmp_path / 'x.png'}"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 1 and "--query=9,0,0 must be t,y,x inside the STSS grid 8x8x8" in done.stderr
