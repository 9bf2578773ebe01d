"""The exported SavedModel, run by TensorFlow in a process where JAX cannot be imported, gives
the JAX model's logits."""

import json
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from flax import nnx

from configs import default
from input_pipeline.synthetic import SyntheticMotion
from stss_jax import export, model_dir, predict
from stss_jax.models import build_model

# Runs in a fresh interpreter: any import of jax, jaxlib or flax fails there, as on a serving
# machine without them (TensorFlow imports jax when it finds it, so hiding it is the test).
LOAD_WITHOUT_JAX = textwrap.dedent("""
    import importlib.abc, sys

    class NoJax(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("jax", "jaxlib", "flax", "stss_jax"):
          raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)")

    sys.meta_path.insert(0, NoJax())
    import numpy as np
    import tensorflow as tf

    saved_model, *inputs = sys.argv[1:]
    serve = tf.saved_model.load(saved_model).signatures["serving_default"]
    for path in inputs:
      np.save(path + ".logits.npy", serve(clips=tf.constant(np.load(path)))["logits"].numpy())
    assert not [name for name in sys.modules if name.split(".")[0] in ("jax", "jaxlib", "flax")]
""")


def a_model_directory(path, config):
  """A tiny model with BN running statistics away from their initial 0 and 1, so that evaluation
  mode is tested."""
  model = build_model(config, nnx.Rngs(1))
  keys = iter(jax.random.split(jax.random.key(2), 1000))
  for path_, stat in nnx.iter_graph(model):
    if isinstance(stat, nnx.BatchStat):
      shift = 0.5 * jax.random.normal(next(keys), stat.value.shape)
      stat.value = stat.value + shift if "mean" in str(path_[-1]) else stat.value * np.exp(shift)
  return model_dir.save(path, model, config), model


@pytest.mark.slow  # a SavedModel loaded in a process without jax
def test_savedmodel_without_jax_gives_the_jax_logits_for_two_batch_sizes(tmp_path, capsys):
  config = default.get_config("tiny")
  checkpoint, model = a_model_directory(tmp_path / "model", config)
  status = export.main(
    [
      "export",
      "--config=configs/default.py:tiny",
      f"--checkpoint={checkpoint}",
      f"--output={tmp_path / 'exported'}",
    ]
  )
  out = capsys.readouterr().out
  assert status == 0
  assert "(N, 4, 32, 32, 3) float32 -> logits (N, 6) float32" in out
  description = json.loads((tmp_path / "exported" / export.DESCRIPTION_FILE).read_text())
  assert description["input"]["shape"] == [None, 4, 32, 32, 3]
  assert description["class_names"] == list(SyntheticMotion(4, 32).class_names[:6])

  data = SyntheticMotion(4, 32, config.seed, classes=tuple(config.dataset.classes))
  inputs, expected = [], []
  for size in (2, 5):
    clips = data.batch("validation", range(size))["clips"]
    inputs.append(tmp_path / f"clips{size}.npy")
    np.save(inputs[-1], clips)
    expected.append(predict.predict(model, clips))
  loader = tmp_path / "load.py"
  loader.write_text(LOAD_WITHOUT_JAX)
  result = subprocess.run(
    [sys.executable, str(loader), str(tmp_path / "exported"), *map(str, inputs)],
    capture_output=True,
    text=True,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  for path, logits in zip(inputs, expected):
    served = np.load(f"{path}.logits.npy")
    assert served.shape == logits.shape
    assert np.abs(served - logits).max() <= 1e-4 * np.abs(logits).max()


def test_export_refuses_a_used_output_and_another_models_checkpoint(tmp_path, capsys):
  config = default.get_config("tiny")
  checkpoint, _ = a_model_directory(tmp_path / "model", config)
  (tmp_path / "used").mkdir()
  (tmp_path / "used" / "keep.txt").write_text("mine")
  assert (
    export.main(
      [
        "export",
        "--config=configs/default.py:tiny",
        f"--checkpoint={checkpoint}",
        f"--output={tmp_path / 'used'}",
      ]
    )
    == 1
  )
  assert "exists and is not empty" in capsys.readouterr().err
  assert (tmp_path / "used" / "keep.txt").read_text() == "mine"
  assert (
    export.main(
      [
        "export",
        "--config=configs/default.py:tiny",
        "--config.model.width=16",
        f"--checkpoint={checkpoint}",
        f"--output={tmp_path / 'other'}",
      ]
    )
    == 1
  )
  err = capsys.readouterr().err
  assert "model.width is 8 in the checkpoint, 16 in the config" in err
  assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("flag", ["--checkpoint", "--output"])
def test_export_needs_checkpoint_and_output(tmp_path, capsys, flag):
  argv = [
    "export",
    "--config=configs/default.py:tiny",
    f"--checkpoint={tmp_path}",
    f"--output={tmp_path / 'o'}",
  ]
  assert export.main([a for a in argv if not a.startswith(flag)]) == 2
  assert flag[2:] in capsys.readouterr().err
