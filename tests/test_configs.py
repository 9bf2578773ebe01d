"""Every config file loads, documents its command line, and builds its model."""

import importlib
import pathlib

import pytest
from flax import nnx

from stss_jax.models import build_model
from stss_jax.train import loop, optimizer

CONFIGS = sorted(
  p.stem
  for p in (pathlib.Path(__file__).resolve().parents[1] / "configs").glob("*.py")
  if p.stem not in ("__init__", "common", "from_model")  # from_model: tests/test_model_dir.py
)


def test_all_experiments_are_there():
  assert {"default", "ssv1", "ssv2", "diving48", "finegym"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_and_builds_its_model(name):
  module = importlib.import_module(f"configs.{name}")
  assert "python main.py --config=configs/" in module.__doc__
  config = module.get_config()
  for key in ("seed", "batch_size", "total_steps", "eval_every_steps", "checkpoint_every_steps"):
    assert key in config, key
  loop.validate_config(config)
  optimizer.build_optimizer(config)
  model = nnx.eval_shape(lambda: build_model(config))
  assert model.new_fc.kernel.shape[-1] == config.dataset.num_classes


def test_official_recipe_numbers():
  from configs import ssv1

  config = ssv1.get_config()
  schedule = optimizer.learning_rate_schedule(config)
  assert config.optimizer.nesterov and config.optimizer.momentum == 0.9
  assert config.optimizer.weight_decay == 5e-4 and config.optimizer.grad_clip_norm == 20
  steps = config.total_steps
  assert float(schedule(0)) == pytest.approx(0.01)
  assert float(schedule(int(0.6 * steps) + 1)) == pytest.approx(0.001)
  assert float(schedule(int(0.8 * steps) + 1)) == pytest.approx(0.0001)
  assert ssv1.get_config("16").input.num_frames == 16


@pytest.mark.parametrize("name", ["ssv1", "ssv2"])
def test_never_flipped_classes_are_the_ones_a_flip_turns_into_another(name):
  """The ids in no_flip_labels are exactly the classes whose mirror image (left <-> right) is
  another class, found here from the authors' class list."""
  from tests.conftest import FIXTURES

  names = (FIXTURES / "something_category.txt").read_text().splitlines()

  def mirror(name):
    return name.replace("left", "\0").replace("right", "left").replace("\0", "right")

  expected = {i for i, n in enumerate(names) if mirror(n) != n and mirror(n) in names}
  config = importlib.import_module(f"configs.{name}").get_config()
  assert set(config.dataset.no_flip_labels) == expected
