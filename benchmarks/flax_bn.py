"""The 'before' of conv_bn.batch_norm_relu, for benchmarks that compare against it.

use_flax_batch_norm() makes every BN of the network nnx.BatchNorm + ReLU differentiated by
autodiff, as the project had it before the one-pass BN (alignment padding of the dense extraction
then counts in its statistics: fine for timing, not for training).
"""

from __future__ import annotations

from flax import nnx

from stss_jax.layers import conv_bn, resnet_blocks
from stss_jax.models import selfynet


def flax_batch_norm_relu(bn, x, relu=True, real_cells=None):
  del real_cells
  x = bn(x)
  return nnx.relu(x) if relu else x


def use_flax_batch_norm() -> None:
  for module in (conv_bn, resnet_blocks, selfynet):
    module.batch_norm_relu = flax_batch_norm_relu
