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

from absl import flags

from stss_jax import cli, model_card, model_dir
from stss_jax.convert import (
  CheckpointMismatchError,
  import_official,
  import_torchvision,
  load_state_dict,
)
from stss_jax.models import build_model

IMPORTERS = {"official": import_official, "torchvision": import_torchvision}


def define_flags(flag_values: flags.FlagValues, argv) -> None:
  cli.define_config(flag_values, argv)
  flags.DEFINE_enum(
    "from",
    None,
    list(IMPORTERS),
    "Checkpoint format: the authors' trainer or torchvision.",
    flag_values=flag_values,
  )
  flags.DEFINE_string(
    "checkpoint", None, "PyTorch .pth/.pth.tar file to read.", flag_values=flag_values
  )
  flags.DEFINE_string(
    "output", None, "New directory to write the model directory to.", flag_values=flag_values
  )
  flags.mark_flags_as_required(["from", "checkpoint", "output"], flag_values=flag_values)


def run(flag_values: flags.FlagValues) -> int:
  config = flag_values.config
  state_dict = load_state_dict(flag_values.checkpoint)
  model = build_model(config)
  report = IMPORTERS[flag_values["from"].value](model, state_dict)
  kind = flag_values["from"].value
  card = model_card.converted_card(config, flag_values.output, flag_values.checkpoint, kind)
  directory = model_dir.save(flag_values.output, model, config, card=card)
  print(report.summary())
  print(f"wrote {directory}")
  return 0


def main(argv=None) -> int:
  return cli.main(
    __doc__, define_flags, run, argv, errors={CheckpointMismatchError: 1, ImportError: 1}
  )


if __name__ == "__main__":
  sys.exit(main())
