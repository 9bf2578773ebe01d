"""ResNet basic and bottleneck blocks with an optional temporal shift on the residual branch.

Attribute names (conv1, bn1, ..., downsample[0|1]) are torchvision's, so ImageNet and official
checkpoints map one to one. Inputs are clips (N, T, H, W, C); convolutions treat (N, T) as batch,
which is the TSN "frames folded into the batch" form. With `zero_init` (the official model's
init) the branch's last BN starts at zero scale, so that every block starts as the identity.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from stss_jax import ops
from stss_jax.layers.conv_bn import batch_norm, conv_bn_relu, kaiming_fan_out


def conv(
  in_features: int, out_features: int, kernel: int, stride: int = 1, *, dtype, rngs
) -> nnx.Conv:
  """A bias-free square convolution with PyTorch's padding (kernel // 2) and init."""
  return nnx.Conv(
    in_features,
    out_features,
    (kernel, kernel),
    strides=(stride, stride),
    padding=[(kernel // 2, kernel // 2)] * 2,
    use_bias=False,
    kernel_init=kaiming_fan_out,
    dtype=dtype,
    rngs=rngs,
  )


class _ResidualBlock(nnx.Module):
  """Shared residual wiring: shortcut (projected when shapes change) + branch, then ReLU."""

  expansion = 1

  def _init_shortcut(self, in_features, features, stride, shift, shift_div, dtype, rngs):
    out_features = features * self.expansion
    self.shift = shift
    self.shift_div = shift_div
    if stride != 1 or in_features != out_features:
      self.downsample = nnx.List(
        [
          conv(in_features, out_features, 1, stride, dtype=dtype, rngs=rngs),
          batch_norm(out_features, dtype=dtype, rngs=rngs),
        ]
      )
    else:
      self.downsample = None

  def __call__(self, clips: jax.Array) -> jax.Array:
    shortcut = clips
    if self.downsample is not None:
      projection, norm = self.downsample
      shortcut = conv_bn_relu(projection, norm, clips, relu=False)
    branch = ops.temporal_shift(clips, self.shift_div) if self.shift else clips
    return nnx.relu(shortcut + self.branch(branch))


class BasicBlock(_ResidualBlock):
  """Two 3x3 convs (ResNet-18/34)."""

  expansion = 1

  def __init__(
    self,
    in_features,
    features,
    stride=1,
    *,
    shift=True,
    shift_div=8,
    zero_init=True,
    dtype=jnp.float32,
    rngs,
  ):
    self.conv1 = conv(in_features, features, 3, stride, dtype=dtype, rngs=rngs)
    self.bn1 = batch_norm(features, dtype=dtype, rngs=rngs)
    self.conv2 = conv(features, features, 3, dtype=dtype, rngs=rngs)
    self.bn2 = batch_norm(features, zero_scale=zero_init, dtype=dtype, rngs=rngs)
    self._init_shortcut(in_features, features, stride, shift, shift_div, dtype, rngs)

  def branch(self, x):
    x = conv_bn_relu(self.conv1, self.bn1, x)
    return conv_bn_relu(self.conv2, self.bn2, x, relu=False)


class Bottleneck(_ResidualBlock):
  """1x1 -> 3x3 (stride here, torchvision v1.5) -> 1x1 with 4x expansion (ResNet-50/101)."""

  expansion = 4

  def __init__(
    self,
    in_features,
    features,
    stride=1,
    *,
    shift=True,
    shift_div=8,
    zero_init=True,
    dtype=jnp.float32,
    rngs,
  ):
    self.conv1 = conv(in_features, features, 1, dtype=dtype, rngs=rngs)
    self.bn1 = batch_norm(features, dtype=dtype, rngs=rngs)
    self.conv2 = conv(features, features, 3, stride, dtype=dtype, rngs=rngs)
    self.bn2 = batch_norm(features, dtype=dtype, rngs=rngs)
    self.conv3 = conv(features, features * 4, 1, dtype=dtype, rngs=rngs)
    self.bn3 = batch_norm(features * 4, zero_scale=zero_init, dtype=dtype, rngs=rngs)
    self._init_shortcut(in_features, features, stride, shift, shift_div, dtype, rngs)

  def branch(self, x):
    x = conv_bn_relu(self.conv1, self.bn1, x)
    x = conv_bn_relu(self.conv2, self.bn2, x)
    return conv_bn_relu(self.conv3, self.bn3, x, relu=False)
