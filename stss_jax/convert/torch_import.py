"""Maps PyTorch state_dicts onto SELFYNet's NNX state, refusing anything that does not fit.

Our module paths mirror the official names, so one rule set translates a path such as
('base_model', 'selfy', 'stss_extraction', 'conv1', 'bn', 'var') into
'base_model.selfy.stss_extraction.conv1.1.running_var'.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Mapping

import numpy as np
from flax import nnx

LEAF_NAMES = {
  "kernel": "weight",
  "scale": "weight",
  "bias": "bias",
  "mean": "running_mean",
  "var": "running_var",
}
# Positions inside the official nn.Sequential of each ConvBN unit; conv3_fuse starts with a
# Rearrange.
CONV_BN_INDEX = {"conv": "0", "bn": "1"}
FUSE_INDEX = {"conv": "1", "bn": "2"}
SELFY_RENAMES = {"upsample": "upsample.0", "upsample_bn": "upsample.1"}
IGNORED_SUFFIXES = ("num_batches_tracked",)  # a PyTorch BN counter with no counterpart


class CheckpointMismatchError(ValueError):
  """A checkpoint whose keys or shapes do not match the model; nothing was loaded."""


@dataclasses.dataclass
class ImportReport:
  """What an import did with each key."""

  used: list[str]  # file keys copied into the model
  skipped: list[str]  # file keys not used (BN counters, a replaced head)
  left_at_init: list[str]  # model keys with no counterpart in the file, left as initialised

  def summary(self) -> str:
    lines = [
      f"used {len(self.used)} keys, skipped {len(self.skipped)}, left at init "
      f"{len(self.left_at_init)}"
    ]
    if self.skipped:
      lines.append("skipped: " + ", ".join(self.skipped))
    if self.left_at_init:
      lines.append("left at init: " + ", ".join(self.left_at_init))
    return "\n".join(lines)


def torch_key(path: tuple) -> str:
  """The official state_dict key (without 'module.') of one of our flat-state paths."""
  parts = []
  in_selfy = False
  for i, segment in enumerate(path):
    segment = str(segment)
    if i == len(path) - 1:
      parts.append(LEAF_NAMES.get(segment, segment))
    elif in_selfy and segment in CONV_BN_INDEX:
      index = FUSE_INDEX if str(path[i - 1]) == "conv3_fuse" else CONV_BN_INDEX
      parts.append(index[segment])
    elif in_selfy and segment in SELFY_RENAMES:
      parts.append(SELFY_RENAMES[segment])
    else:
      parts.append(segment)
    in_selfy = in_selfy or segment.startswith(("selfy", "stss_"))
  return ".".join(parts)


def to_flax_layout(key: str, value: np.ndarray, target_shape: tuple) -> np.ndarray:
  """Reorders a PyTorch weight into the layout of the NNX variable it maps to."""
  if key.endswith("upsample.0.weight"):  # ConvTranspose (in, out, 1, 1, 1) -> (1, 1, in, out)
    return value.reshape(1, 1, *value.shape[:2]) if value.ndim == 5 else value
  if len(target_shape) == 4:  # conv kernel (kh, kw, in, out) from (out, in, [1,] kh, kw)
    if value.ndim == 5 and value.shape[2] == 1:
      value = value[:, :, 0]
    return value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
  if len(target_shape) == 2:
    if value.ndim == 3 and value.shape[-1] == 1:  # Conv1d head (classes, features, 1)
      value = value[..., 0]
    return value.T if value.ndim == 2 else value
  return value


def load_state_dict(path: str | pathlib.Path) -> dict[str, np.ndarray]:
  """Reads a .pth/.tar checkpoint into numpy arrays, with 'module.' prefixes removed."""
  try:
    import torch
  except ImportError as e:
    raise ImportError(
      "reading PyTorch checkpoints needs torch: pip install -r requirements-torch.txt"
    ) from e
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"checkpoint {path} does not exist")
  try:
    content = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:
    raise ValueError(f"checkpoint {path} is not a readable PyTorch file: {e}") from e
  if isinstance(content, Mapping) and "state_dict" in content:
    content = content["state_dict"]
  if not isinstance(content, Mapping) or not all(hasattr(v, "numpy") for v in content.values()):
    raise ValueError(f"checkpoint {path} holds no state_dict of tensors")
  return {k.removeprefix("module."): v.detach().float().numpy() for k, v in content.items()}


def load_weights(
  model: nnx.Module,
  state_dict: Mapping[str, np.ndarray],
  *,
  key_of: Callable[[tuple], str] = torch_key,
  may_stay_at_init: Callable[[str], bool] = lambda key: False,
  may_skip: Callable[[str], bool] = lambda key: False,
) -> ImportReport:
  """Copies `state_dict` into `model` or raises CheckpointMismatchError without touching it.

  Args:
    model: the network; its Param and BatchStat variables are filled.
    state_dict: PyTorch key -> array.
    key_of: our flat path -> PyTorch key.
    may_stay_at_init: model keys that may be absent from the file (they keep their init).
    may_skip: file keys that may go unused.
  """
  state = nnx.state(model, (nnx.Param, nnx.BatchStat))
  flat = nnx.to_flat_state(state)
  missing, mismatched, used, left_at_init, loaded = [], [], [], [], []
  for path, variable in flat:
    key = key_of(path)
    target_shape = tuple(variable.shape)
    if key not in state_dict:
      (left_at_init if may_stay_at_init(key) else missing).append(key)
      loaded.append((path, variable))
      continue
    value = to_flax_layout(key, np.asarray(state_dict[key]), target_shape)
    if tuple(value.shape) != target_shape:
      mismatched.append(f"{key}: file {tuple(state_dict[key].shape)}, model {target_shape}")
      continue
    used.append(key)
    loaded.append((path, variable.replace(value.astype(variable.dtype))))
  unused = [k for k in state_dict if k not in set(used)]
  skipped = [k for k in unused if k.endswith(IGNORED_SUFFIXES) or may_skip(k)]
  unexpected = [k for k in unused if k not in set(skipped)]
  problems = []
  if missing:
    problems.append(f"{len(missing)} model keys missing from the file: " + ", ".join(missing))
  if mismatched:
    problems.append(f"{len(mismatched)} keys with other shapes: " + "; ".join(mismatched))
  if unexpected:
    problems.append(
      f"{len(unexpected)} file keys the model does not have: " + ", ".join(unexpected)
    )
  if problems:
    raise CheckpointMismatchError(
      "checkpoint does not match the model (nothing was loaded):\n" + "\n".join(problems)
    )
  nnx.update(model, nnx.from_flat_state(loaded))
  return ImportReport(used=used, skipped=skipped, left_at_init=left_at_init)


def import_official(model: nnx.Module, state_dict: Mapping[str, np.ndarray]) -> ImportReport:
  """The authors' trained model: every key must match both ways."""
  return load_weights(model, state_dict)


def import_torchvision(model: nnx.Module, state_dict: Mapping[str, np.ndarray]) -> ImportReport:
  """ImageNet init from a torchvision ResNet: backbone must match; SELFY blocks and head stay
  fresh."""

  def key_of(path):
    key = torch_key(path)
    return key.removeprefix("base_model.") if key.startswith("base_model.") else key

  return load_weights(
    model,
    state_dict,
    key_of=key_of,
    may_stay_at_init=lambda key: key.startswith(("selfy", "new_fc.")),
    may_skip=lambda key: key.startswith("fc."),
  )
