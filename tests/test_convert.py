"""Weight import: our network on imported weights against an independent PyTorch reference."""

import sys

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="weight import needs the optional torch extra")

from flax import nnx  # noqa: E402

from configs import ssv1  # noqa: E402
from stss_jax import convert, model_dir, predict  # noqa: E402
from stss_jax.convert import __main__ as convert_command  # noqa: E402
from stss_jax.models import build_model  # noqa: E402
from tests import torch_reference as ref  # noqa: E402

FRAMES, SIZE, CLASSES = 8, 64, 10


def config(depth=50, shift=True, selfy_stages=(2,)):
  config = ssv1.get_config()
  config.dataset.num_classes = CLASSES
  config.input.image_size = SIZE
  config.model.depth = depth
  config.model.temporal_shift = shift
  config.model.selfy_stages = selfy_stages
  return config


def random_clips(seed, n=2):
  return np.random.default_rng(seed).normal(size=(n, FRAMES, SIZE, SIZE, 3)).astype(np.float32)


def reference_logits(model, clips):
  with torch.no_grad():
    return model(torch.from_numpy(clips.transpose(0, 1, 4, 2, 3).copy())).numpy()


def save_official(model, path):
  """The official trainer's checkpoint format: DataParallel 'module.' keys inside a dict."""
  state = {f"module.{k}": v for k, v in model.state_dict().items()}
  torch.save({"epoch": 50, "arch": "SELFY", "state_dict": state, "best_prec1": 0.0}, path)


def assert_close(got, expected):
  scale = np.abs(expected).max()
  assert np.abs(got - expected).max() <= 1e-4 * max(1.0, scale), (
    np.abs(got - expected).max(),
    scale,
  )


@pytest.mark.slow  # a full-size parity check
def test_official_checkpoint_through_convert_and_predict(tmp_path, capsys):
  reference = ref.randomize(ref.TSN(CLASSES, FRAMES, depth=50, shift=True, selfy_after=2))
  save_official(reference, tmp_path / "selfy.pth.tar")
  clips = random_clips(0)
  np.save(tmp_path / "clip.npy", clips)
  overrides = [f"--config.dataset.num_classes={CLASSES}", f"--config.input.image_size={SIZE}"]

  status = convert_command.main(
    [
      "convert",
      "--from=official",
      f"--checkpoint={tmp_path / 'selfy.pth.tar'}",
      "--config=configs/ssv1.py",
      *overrides,
      f"--output={tmp_path / 'converted'}",
    ]
  )
  out, err = capsys.readouterr()
  assert status == 0, err
  assert "left at init 0" in out
  card = (tmp_path / "converted" / model_dir.CARD_FILE).read_text()
  assert f"`{tmp_path / 'selfy.pth.tar'}` (official format)" in card
  status = predict.main(
    [
      "predict",
      "--config=configs/ssv1.py",
      *overrides,
      f"--checkpoint={tmp_path / 'converted'}",
      f"--clip={tmp_path / 'clip.npy'}",
      f"--output={tmp_path / 'logits.npy'}",
    ]
  )
  assert status == 0, capsys.readouterr().err
  logits = np.load(tmp_path / "logits.npy")
  assert logits.shape == (2, CLASSES) and logits.dtype == np.float32
  assert_close(logits, reference_logits(reference, clips))


@pytest.mark.slow  # a full-size parity check
def test_resnet18_without_shift_and_selfy_after_stage3():
  reference = ref.randomize(ref.TSN(CLASSES, FRAMES, depth=18, shift=False, selfy_after=3), seed=1)
  model = build_model(config(depth=18, shift=False, selfy_stages=(3,)))
  state = {k: v.numpy() for k, v in reference.state_dict().items()}
  state = {
    k.replace("base_model.selfy.", "base_model.selfy_after_layer3."): v for k, v in state.items()
  }
  convert.import_official(model, state)
  model.eval()
  clips = random_clips(1)
  assert_close(np.asarray(model(clips)), reference_logits(reference, clips))


@pytest.mark.slow  # a full-size parity check
def test_torchvision_import_fills_backbone_and_reports_the_rest(tmp_path):
  backbone = ref.randomize(ref.ResNet(ref.Bottleneck, (3, 4, 6, 3), FRAMES, False, None), seed=2)
  state = dict(backbone.state_dict())
  state["fc.weight"] = torch.zeros(1000, 2048)
  state["fc.bias"] = torch.zeros(1000)
  torch.save(state, tmp_path / "resnet50.pth")
  model = build_model(config(shift=False))
  report = convert.import_torchvision(model, convert.load_state_dict(tmp_path / "resnet50.pth"))
  assert {"fc.weight", "fc.bias"} <= set(report.skipped)
  assert {"new_fc.weight", "new_fc.bias"} <= set(report.left_at_init)
  assert not any(k.startswith("layer") for k in report.left_at_init)
  assert any(k.startswith("selfy.") for k in report.left_at_init)
  # With SELFY's last BN at zero scale, the block is the identity: features equal the backbone's.
  model.eval()
  clips = random_clips(2, n=1)
  features = np.asarray(model.base_model(clips)).mean(axis=(2, 3)).reshape(FRAMES, -1)
  with torch.no_grad():
    expected = backbone(torch.from_numpy(clips[0].transpose(0, 3, 1, 2).copy())).numpy()
  assert_close(features, expected)


@pytest.mark.slow  # a full-size model
def test_mismatched_checkpoint_is_refused_and_nothing_loaded():
  reference = ref.TSN(CLASSES, FRAMES, depth=50, shift=True, selfy_after=2)
  state = {k: v.numpy() for k, v in reference.state_dict().items()}
  del state["base_model.layer3.2.bn1.running_var"]
  state["new_fc.weight"] = np.zeros((CLASSES + 1, 2048, 1), np.float32)
  state["base_model.layer5.0.conv1.weight"] = np.zeros((1, 1, 1, 1), np.float32)
  model = build_model(config())
  before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
  with pytest.raises(convert.CheckpointMismatchError) as error:
    convert.import_official(model, state)
  message = str(error.value)
  assert "base_model.layer3.2.bn1.running_var" in message
  assert "new_fc.weight: file (11, 2048, 1), model (2048, 10)" in message
  assert "base_model.layer5.0.conv1.weight" in message
  after = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))


def test_missing_or_unreadable_files_are_named(tmp_path, capsys):
  with pytest.raises(FileNotFoundError, match="nope.pth"):
    convert.load_state_dict(tmp_path / "nope.pth")
  (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
  with pytest.raises(ValueError, match="junk.pth"):
    convert.load_state_dict(tmp_path / "junk.pth")
  status = convert_command.main(
    [
      "convert",
      "--from=official",
      f"--checkpoint={tmp_path / 'junk.pth'}",
      "--config=configs/default.py:tiny",
      f"--output={tmp_path / 'out'}",
    ]
  )
  err = capsys.readouterr().err
  assert status == 1 and "junk.pth" in err and "Traceback" not in err
  assert not (tmp_path / "out").exists()


def test_missing_torch_gives_an_install_hint(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "torch", None)
  with pytest.raises(ImportError, match="requirements-torch.txt"):
    convert.load_state_dict(tmp_path / "x.pth")
