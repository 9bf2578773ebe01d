"""Import of PyTorch checkpoints: the authors' SELFY/TSM format and torchvision ResNets."""

from stss_jax.convert.torch_import import (
  CheckpointMismatchError,
  ImportReport,
  import_official,
  import_torchvision,
  load_state_dict,
  load_weights,
  torch_key,
)

__all__ = [
  "CheckpointMismatchError",
  "ImportReport",
  "import_official",
  "import_torchvision",
  "load_state_dict",
  "load_weights",
  "torch_key",
]
