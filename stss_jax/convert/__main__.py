"""Converts a PyTorch checkpoint into a model checkpoint directory.

  python -m stss_jax.convert --from=official --checkpoint=SELFY_ssv1.pth.tar \
      --config=configs/ssv1.py --output=runs/selfy_ssv1
  python -m stss_jax.convert --from=torchvision --checkpoint=resnet50-19c8e357.pth \
      --config=configs/ssv1.py --output=runs/imagenet_r50

`official` needs every key to match both ways; `torchvision` fills the backbone and leaves the
SELFY blocks and the head at their initialisation. A mismatch is refused with the keys listed.
"""
from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from stss_jax.convert import CheckpointMismatchError, import_official, import_torchvision, load_state_dict
from stss_jax.models import build_model
from stss_jax.train.checkpoints import save_model

IMPORTERS = {"official": import_official, "torchvision": import_torchvision}

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_enum("from", None, list(IMPORTERS), "Checkpoint format: the authors' trainer or torchvision.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "PyTorch .pth/.pth.tar file to read.")
_OUTPUT = flags.DEFINE_string("output", None, "New directory to write the model checkpoint to.")


def main(argv):
  del argv
  config = _CONFIG.value
  source = flags.FLAGS["from"].value
  if config is None or source is None or not _CHECKPOINT.value or not _OUTPUT.value:
    raise app.UsageError("--config, --from, --checkpoint and --output are all required")
  try:
    state_dict = load_state_dict(_CHECKPOINT.value)
    model = build_model(config)
    report = IMPORTERS[source](model, state_dict)
    directory = save_model(_OUTPUT.value, model, config)
  except (CheckpointMismatchError, FileNotFoundError, FileExistsError, ImportError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(report.summary())
  print(f"wrote {directory}")
  return 0


if __name__ == "__main__":
  app.run(main)
