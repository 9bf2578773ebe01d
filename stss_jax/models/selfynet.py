"""SELFYNet: a TSN over a (TSM-)ResNet with SELFY blocks after chosen stages.

Attribute names mirror the official model (base_model.layer2.0.conv1, base_model.selfy, new_fc)
so checkpoint paths are readable and import maps one to one. The official model is
depth 50, temporal shift on, one SELFY block after stage 2.
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from stss_jax.layers import EXTRACTORS, BasicBlock, Bottleneck, SELFYBlock
from stss_jax.layers.conv_bn import BN_INPUT, BN_STATISTICS, batch_norm, conv_bn_relu
from stss_jax.layers.resnet_blocks import conv

DEPTHS = {
  18: (BasicBlock, (2, 2, 2, 2)),
  34: (BasicBlock, (3, 4, 6, 3)),
  50: (Bottleneck, (3, 4, 6, 3)),
  101: (Bottleneck, (3, 4, 23, 3)),
}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
STAGES = (1, 2, 3, 4)  # the ResNet stages that selfy_stages and remat_stages name


def selfy_name(stage: int) -> str:
  """The attribute of the SELFY block after `stage`; the official one (stage 2) is `selfy`."""
  return "selfy" if stage == 2 else f"selfy_after_layer{stage}"


class ResNet(nnx.Module):
  """A ResNet over clips (N, T, H, W, 3) -> per-frame features (N, T, h, w, F)."""

  def __init__(
    self,
    depth: int = 50,
    width: int = 64,
    temporal_shift: bool = True,
    shift_div: int = 8,
    selfy_stages: Sequence[int] = (2,),
    selfy: dict | None = None,
    zero_init_residual: bool = True,
    remat: bool = False,
    remat_saves: str = "nothing",
    remat_stages: Sequence[int] = STAGES,
    *,
    dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    block, counts = DEPTHS[depth]
    self.remat_saves = remat_saves
    self.remat_stages = tuple(remat_stages) if remat else ()  # stages whose blocks are recomputed
    self.conv1 = conv(3, width, 7, 2, dtype=dtype, rngs=rngs)
    self.bn1 = batch_norm(width, dtype=dtype, rngs=rngs)
    in_features = width
    self.selfy_stages = tuple(selfy_stages)
    for stage, count in enumerate(counts, start=1):
      features = width * 2 ** (stage - 1)
      blocks = []
      for index in range(count):
        stride = 2 if stage > 1 and index == 0 else 1
        blocks.append(
          block(
            in_features,
            features,
            stride,
            shift=temporal_shift,
            shift_div=shift_div,
            zero_init=zero_init_residual,
            dtype=dtype,
            rngs=rngs,
          )
        )
        in_features = features * block.expansion
      setattr(self, f"layer{stage}", nnx.List(blocks))
      if stage in self.selfy_stages:
        setattr(
          self, selfy_name(stage), SELFYBlock(in_features, **(selfy or {}), dtype=dtype, rngs=rngs)
        )
    self.out_features = in_features

  def __call__(self, clips: jax.Array) -> jax.Array:
    x = self.features_after(clips, 4)
    return getattr(self, selfy_name(4))(x) if 4 in self.selfy_stages else x

  def features_after(self, clips: jax.Array, last_stage: int) -> jax.Array:
    """Features leaving stage `last_stage` (1-4), before the SELFY block that may follow it."""
    x = conv_bn_relu(self.conv1, self.bn1, clips)
    x = jax.lax.reduce_window(
      x,
      -jnp.inf,
      jax.lax.max,
      (1, 1, 3, 3, 1),
      (1, 1, 2, 2, 1),
      ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)),
    )
    for stage in range(1, last_stage + 1):
      for block in getattr(self, f"layer{stage}"):
        x = REMAT_CALLS[self.remat_saves](block, x) if stage in self.remat_stages else block(x)
      if stage in self.selfy_stages and stage < last_stage:
        x = getattr(self, selfy_name(stage))(x)
    return x


def _call(block: nnx.Module, x: jax.Array) -> jax.Array:
  return block(x)


# block(x) with its activations recomputed in the backward pass, by what it keeps (remat_saves):
# nothing but its input, or also every BN's input and batch moments (conv_bn.BN_INPUT: each
# convolution's output; BN_STATISTICS), so that only the BNs' and ReLUs' elementwise passes, the
# temporal shifts and the additions are recomputed: no convolution and no reduction.
REMAT_CALLS = {
  "nothing": nnx.remat(_call),
  "bn_inputs": nnx.remat(
    _call, policy=jax.checkpoint_policies.save_only_these_names(BN_INPUT, BN_STATISTICS)
  ),
}


class SELFYNet(nnx.Module):
  """TSN: backbone per frame, average pool, dropout, linear head, logits averaged over frames."""

  def __init__(
    self,
    num_classes: int,
    depth: int = 50,
    width: int = 64,
    temporal_shift: bool = True,
    shift_div: int = 8,
    selfy_stages: Sequence[int] = (2,),
    selfy: dict | None = None,
    dropout: float = 0.5,
    zero_init_residual: bool = True,
    remat: bool = False,
    remat_saves: str = "nothing",
    remat_stages: Sequence[int] = STAGES,
    *,
    dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.dtype = dtype
    self.base_model = ResNet(
      depth,
      width,
      temporal_shift,
      shift_div,
      selfy_stages,
      selfy,
      zero_init_residual,
      remat,
      remat_saves,
      remat_stages,
      dtype=dtype,
      rngs=rngs,
    )
    self.dropout = nnx.Dropout(dropout)
    self.new_fc = nnx.Linear(
      self.base_model.out_features,
      num_classes,
      kernel_init=nnx.initializers.xavier_uniform(),
      dtype=dtype,
      rngs=rngs,
    )

  def __call__(self, clips: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    """Normalised clips (N, T, H, W, 3) -> logits (N, classes) in float32.

    `rngs` needs a 'dropout' stream in training mode (dropout rate > 0).
    """
    chex.assert_rank(clips, 5)
    chex.assert_axis_dimension(clips, -1, 3)
    features = self.base_model(clips.astype(self.dtype))
    pooled = jnp.mean(features.astype(jnp.float32), axis=(2, 3))  # (N, T, F)
    logits = self.new_fc(self.dropout(pooled.astype(self.dtype), rngs=rngs))
    return jnp.mean(logits.astype(jnp.float32), axis=1)


def build_model(config, rngs: nnx.Rngs | None = None) -> SELFYNet:
  """Builds the network of `config.model` for `config.dataset.num_classes`, checking every key."""
  model = config.model
  _check(model.depth in DEPTHS, "model.depth", model.depth, f"one of {sorted(DEPTHS)}")
  _check(model.dtype in DTYPES, "model.dtype", model.dtype, f"one of {sorted(DTYPES)}")
  _check(model.width >= 8 and model.width % 8 == 0, "model.width", model.width, "a multiple of 8")
  stages = tuple(model.selfy_stages)
  _check(
    _distinct_stages(stages),
    "model.selfy_stages",
    stages,
    "distinct stages among 1, 2, 3, 4 (empty for no SELFY)",
  )
  _check(0.0 <= model.dropout < 1.0, "model.dropout", model.dropout, "a rate in [0, 1)")
  _check(model.shift_div >= 2, "model.shift_div", model.shift_div, "an integer >= 2")
  _check(
    model.remat_saves in REMAT_CALLS,
    "model.remat_saves",
    model.remat_saves,
    f"one of {sorted(REMAT_CALLS)}",
  )
  remat_stages = tuple(model.remat_stages)
  _check(
    bool(remat_stages) and _distinct_stages(remat_stages),
    "model.remat_stages",
    remat_stages,
    "distinct stages among 1, 2, 3, 4",
  )
  if not model.remat and set(remat_stages) != set(STAGES):
    raise ValueError(
      f"config.model.remat_stages = {remat_stages} takes effect only with config.model.remat = True"
    )
  _check(config.dataset.num_classes >= 1, "dataset.num_classes", config.dataset.num_classes, ">= 1")
  selfy = model.selfy.to_dict()
  _check(
    selfy["extractor"] in EXTRACTORS,
    "model.selfy.extractor",
    selfy["extractor"],
    f"one of {EXTRACTORS}",
  )
  _check(selfy["hidden"] >= 1, "model.selfy.hidden", selfy["hidden"], "an integer >= 1")
  for key in ("ext_channels", "int_channels"):
    channels = tuple(selfy[key])
    _check(
      bool(channels) and all(c >= 1 for c in channels),
      f"model.selfy.{key}",
      channels,
      "positive channel counts",
    )
  selfy["window"] = tuple(selfy["window"])
  selfy["temporal_offsets"] = tuple(selfy["temporal_offsets"])
  selfy["ext_channels"] = tuple(selfy["ext_channels"])
  selfy["int_channels"] = tuple(selfy["int_channels"])
  try:
    return SELFYNet(
      config.dataset.num_classes,
      depth=model.depth,
      width=model.width,
      temporal_shift=model.temporal_shift,
      shift_div=model.shift_div,
      selfy_stages=stages,
      selfy=selfy,
      dropout=model.dropout,
      zero_init_residual=model.zero_init_residual,
      remat=model.remat,
      remat_saves=model.remat_saves,
      remat_stages=remat_stages,
      dtype=DTYPES[model.dtype],
      rngs=rngs if rngs is not None else nnx.Rngs(config.seed),
    )
  except ValueError as e:
    raise ValueError(f"config.model: {e}") from e


def _distinct_stages(stages: tuple[int, ...]) -> bool:
  """Whether each of `stages` is a ResNet stage (1-4), none twice."""
  return set(stages) <= set(STAGES) and len(set(stages)) == len(stages)


def _check(ok: bool, key: str, value, allowed: str) -> None:
  if not ok:
    raise ValueError(f"config.{key} = {value!r} is not allowed: use {allowed}")
