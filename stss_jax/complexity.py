"""Parameters and multiply-adds of one clip through a config's model.

  python -m stss_jax.complexity --config=configs/ssv1.py

Multiply-adds are read off the traced program (every convolution and matrix product XLA is
asked to run), not from a table of layers, so they stay right when the model changes. Padded
positions count, as in the usual counters (thop, fvcore). The STSS similarity product is an
elementwise multiply-and-sum in our code and is reported on its own from its shape.
"""

from __future__ import annotations

import dataclasses
import math
import sys

import jax
import jax.numpy as jnp
from absl import flags
from flax import nnx

from stss_jax import cli, runtime
from stss_jax.models import build_model

STSS_CALL = "_stss"  # the name of the jitted STSS in the traced program


@dataclasses.dataclass
class Complexity:
  params: int  # trainable parameters (BN statistics excluded, as PyTorch counts)
  conv_macs: int  # multiply-adds in convolutions
  matmul_macs: int  # multiply-adds in matrix products (the linear head)
  stss_macs: int  # multiply-adds of the similarity products in SELFY blocks

  @property
  def total_macs(self) -> int:
    return self.conv_macs + self.matmul_macs + self.stss_macs


def count_params(model: nnx.Module) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _subjaxprs(eqn):
  for value in eqn.params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(item, jax.extend.core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, jax.extend.core.Jaxpr):
        yield item


def count_macs(jaxpr) -> tuple[int, int, int]:
  """(convolution, matrix-product, STSS) multiply-adds of a jaxpr, nested calls included."""
  conv = matmul = stss = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "conv_general_dilated":
      rhs = eqn.invars[1].aval.shape
      rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial)
      per_output = rhs[rhs_spec[1]] * math.prod(rhs[d] for d in rhs_spec[2:])
      conv += math.prod(eqn.outvars[0].aval.shape) * per_output
    elif eqn.primitive.name == "dot_general":
      (lhs_contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      matmul += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contract)
    elif eqn.params.get("name") == STSS_CALL:
      # One product of `channels` terms per similarity: (B, T, H, W, L, U, V) x C.
      channels = eqn.invars[0].aval.shape[-1]
      stss += math.prod(eqn.outvars[0].aval.shape) * channels
      continue
    for sub in _subjaxprs(eqn):
      c, m, s = count_macs(sub)
      conv, matmul, stss = conv + c, matmul + m, stss + s
  return conv, matmul, stss


def measure(config) -> Complexity:
  """Complexity of config's model for one clip of config.input.num_frames x image_size^2.

  The model is traced in its reference forms (shifted-window STSS, convolution extraction), so
  the count is the network's, not that of a faster form that multiplies by structural zeros.
  """
  model = build_model(config)
  model.eval()
  graph, state = nnx.split(model)
  shape = (1, config.input.num_frames, config.input.image_size, config.input.image_size, 3)
  with runtime.use(runtime.Policy(stss="shift", extraction="conv")):
    jaxpr = jax.make_jaxpr(lambda s, x: nnx.merge(graph, s)(x))(state, jnp.zeros(shape)).jaxpr
  return Complexity(count_params(model), *count_macs(jaxpr))


def run(flag_values: flags.FlagValues) -> int:
  config = flag_values.config
  result = measure(config)
  clip = f"{config.input.num_frames}x{config.input.image_size}x{config.input.image_size}"
  print(
    f"model: {config.model.depth}-layer ResNet, SELFY after stages "
    f"{tuple(config.model.selfy_stages)}, "
    f"{config.dataset.num_classes} classes, one {clip} clip"
  )
  print(f"parameters:             {result.params:,}")
  print(f"conv multiply-adds:     {result.conv_macs / 1e9:.2f} G")
  print(f"linear multiply-adds:   {result.matmul_macs / 1e9:.3f} G")
  print(f"STSS multiply-adds:     {result.stss_macs / 1e9:.3f} G")
  print(f"total multiply-adds:    {result.total_macs / 1e9:.2f} G")
  return 0


def main(argv=None) -> int:
  return cli.main(__doc__, cli.define_config, run, argv)


if __name__ == "__main__":
  sys.exit(main())
