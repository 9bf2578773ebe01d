"""Model directories describe themselves: the commands take --checkpoint alone and give what they
give with the full config; the directory records its classes and a card; older and newer
formats are handled in one line."""

import json
import logging
import re

import numpy as np
import pytest

import main
from configs import from_model
from stss_jax import ensemble, evaluation, export, model_dir, predict, robustness, visualize
from tests.test_train import TINY


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """The tiny model after two steps (evaluated at step 2), and a clip file for predict."""
  root = tmp_path_factory.mktemp("trained")
  assert main.main(["main.py", TINY, f"--workdir={root / 'run'}", "--config.total_steps=2"]) == 0
  clips = np.random.default_rng(0).normal(size=(2, 4, 32, 32, 3)).astype(np.float32)
  np.save(root / "clip.npy", clips)
  return root


def test_predict_and_visualize_take_the_checkpoint_alone(trained, capsys):
  model = trained / "run" / "model"
  for name in ("alone", "full"):
    config = [] if name == "alone" else [TINY]
    args = [f"--checkpoint={model}", f"--clip={trained / 'clip.npy'}"]
    assert predict.main(["predict", *config, *args, f"--output={trained / name}.npy"]) == 0
    picture = [f"--output={trained / name}.png"]
    assert visualize.main(["visualize", *config, f"--checkpoint={model}", *picture]) == 0
  np.testing.assert_array_equal(np.load(trained / "alone.npy"), np.load(trained / "full.npy"))
  assert (trained / "alone.png").read_bytes() == (trained / "full.png").read_bytes()
  config = from_model.get_config(str(model))
  assert predict.class_names(config, None, str(model)) == [
    "moving right",
    "moving left",
    "moving down",
    "moving up",
    "approaching",
    "receding",
  ]  # the synthetic source's motions, as the trainer recorded them


def test_eval_mode_takes_the_checkpoint_alone(trained, capsys):
  model = trained / "run" / "model"
  lines = []
  for config in ([], [TINY]):
    capsys.readouterr()
    argv = ["main.py", *config, "--mode=eval", f"--checkpoint={model}"]
    assert main.main([*argv, f"--workdir={trained / f'eval{len(config)}'}"]) == 0
    out = capsys.readouterr().out
    lines.append(out.split("(workdir")[0])
  assert lines[0] == lines[1] and lines[0].startswith("validation: top-1")
  # Without --workdir an evaluation goes beside the model directory.
  capsys.readouterr()
  assert main.main(["main.py", "--mode=eval", f"--checkpoint={model}"]) == 0
  assert f"(workdir {trained / 'run' / 'eval'})" in capsys.readouterr().out


@pytest.mark.parametrize(
  "override,message",
  [
    (
      "--config.input.num_frames=8",
      "was trained on other clips: input.num_frames is 4 in the checkpoint, 8 in the config",
    ),
    ("--config.model.depth=34", "model.depth is 18 in the checkpoint, 34 in the config"),
  ],
)
def test_an_override_that_contradicts_the_checkpoint_is_one_line(
  trained, capsys, override, message
):
  capsys.readouterr()
  argv = [TINY, override, f"--checkpoint={trained / 'run' / 'model'}"]
  status = predict.main(["predict", *argv, f"--clip={trained / 'clip.npy'}", "--output=x.npy"])
  err = capsys.readouterr().err.strip().splitlines()
  assert status == 1 and err[-1].startswith("error: ") and message in err[-1]


def test_an_inference_override_applies_to_the_checkpoints_config(trained, capsys):
  model = trained / "run" / "model"
  recorded = from_model.get_config(str(model)).dataset.num_eval
  argv = [
    "main.py",
    "--mode=eval",
    f"--checkpoint={model}",
    f"--config.dataset.num_eval={2 * recorded}",
  ]
  assert main.main([*argv, f"--workdir={trained / 'more'}"]) == 0
  report = json.loads((trained / "more" / "eval_validation_step0.json").read_text())
  assert np.sum(report["confusion"]) == 2 * recorded  # evaluated on the overridden clip count


def test_the_model_card_is_written_from_the_runs_records(trained):
  model = trained / "run" / "model"
  card = (model / model_dir.CARD_FILE).read_text()
  record = json.loads((model / model_dir.CONFIG_FILE).read_text())
  steps = json.loads((trained / "run" / "checkpoints" / "steps.json").read_text())
  evaluated = steps["2"]["evaluation"]
  assert record["format_version"] == from_model.FORMAT_VERSION
  assert record["config"]["input"]["num_frames"] == 4 and len(record["class_names"]) == 6
  assert card.startswith("# SELFYNet: TSN ResNet-18 (width 8) with SELFY after stage 1")
  assert "trained on synthetic" in card
  row = " | ".join(
    f"{evaluated[k]:.2%}" if k != "loss" else f"{evaluated[k]:.4f}" for k in (evaluation.SCALARS)
  )
  assert f"| final | 2 | {row} |" in card and f"| best | 2 | {row} |" in card
  assert f"`python main.py {TINY} --workdir={trained / 'run'} --config.total_steps=2`" in card
  assert re.search(r"\*\*Code:\*\* stss-jax .*", card)
  assert f"python -m stss_jax.predict --checkpoint={model} --video=VIDEO" in card


def test_a_directory_of_the_first_format_loads_with_one_warning(trained, capsys, caplog):
  old = trained / "old"
  old.mkdir()
  (old / model_dir.WEIGHTS).symlink_to(trained / "run" / "model" / model_dir.WEIGHTS)
  record = json.loads((trained / "run" / "model" / model_dir.CONFIG_FILE).read_text())
  (old / model_dir.CONFIG_FILE).write_text(
    json.dumps({"model": record["model"], "num_classes": record["num_classes"]})
  )
  args = [f"--checkpoint={old}", f"--clip={trained / 'clip.npy'}"]
  with caplog.at_level(logging.WARNING):
    assert predict.main(["predict", TINY, *args, f"--output={trained / 'old.npy'}"]) == 0
  assert caplog.text.count("records no training config (an older model directory)") == 1
  new = [f"--checkpoint={trained / 'run' / 'model'}", f"--clip={trained / 'clip.npy'}"]
  assert predict.main(["predict", *new, f"--output={trained / 'new.npy'}"]) == 0
  np.testing.assert_array_equal(np.load(trained / "old.npy"), np.load(trained / "new.npy"))
  capsys.readouterr()
  assert predict.main(["predict", *args, f"--output={trained / 'none.npy'}"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "records no training config" in err[0] and "--config=" in err[0]


def test_a_directory_of_a_newer_format_stops_in_one_line(trained, capsys):
  newer = trained / "newer"
  newer.mkdir()
  (newer / model_dir.CONFIG_FILE).write_text(json.dumps({"format_version": 99}))
  capsys.readouterr()
  status = predict.main(
    ["predict", f"--checkpoint={newer}", f"--clip={trained / 'clip.npy'}", "--output=x.npy"]
  )
  err = capsys.readouterr().err.strip().splitlines()
  assert status == 2 and len(err) == 1
  assert "is of format 99, newer than this stss-jax reads (2): upgrade stss-jax" in err[0]


@pytest.mark.slow  # two SavedModel exports
def test_export_takes_the_checkpoint_alone_and_records_the_class_names(trained, capsys):
  model = trained / "run" / "model"
  descriptions = []
  for name, config in (("alone", []), ("full", [TINY])):
    output = trained / f"export_{name}"
    argv = ["export", *config, f"--checkpoint={model}", f"--output={output}"]
    assert export.main(argv) == 0, capsys.readouterr().err[-3000:]
    descriptions.append(json.loads((output / export.DESCRIPTION_FILE).read_text()))
  assert descriptions[0] == descriptions[1]
  assert descriptions[0]["class_names"][0] == "moving right"


def test_ensemble_and_robustness_take_the_checkpoints_alone(trained, capsys):
  model = trained / "run" / "model"
  outputs = []
  for config in ([], [TINY]):
    capsys.readouterr()
    argv = ["ensemble", *config, f"--checkpoint={model}"]
    second = [f"--second_config={TINY.split('=', 1)[1]}"] if config else []
    assert ensemble.main([*argv, *second, f"--second_checkpoint={model}"]) == 0
    outputs.append(capsys.readouterr().out)
  assert outputs[0] == outputs[1] and "ensemble: top-1" in outputs[0]
  sweeps = []
  for name, config in (("alone", []), ("full", [TINY])):
    argv = ["robustness", *config, f"--checkpoint={model}", "--corruptions=occlusion"]
    output = trained / f"robustness_{name}"
    assert robustness.main([*argv, "--severities=2", "--noplot", f"--output={output}"]) == 0
    sweeps.append(json.loads((output / robustness.RESULTS_FILE).read_text())["rows"])
  assert sweeps[0] == sweeps[1] and len(sweeps[0]) == 2  # clean, and occlusion at severity 2


def test_the_record_names_the_input_normalization(trained):
  record = json.loads((trained / "run" / "model" / model_dir.CONFIG_FILE).read_text())
  # ImageNet's statistics, as the authors' code normalises (float32 values, as written).
  np.testing.assert_allclose(record["normalization"]["mean"], [0.485, 0.456, 0.406], rtol=1e-6)
  np.testing.assert_allclose(record["normalization"]["std"], [0.229, 0.224, 0.225], rtol=1e-6)
