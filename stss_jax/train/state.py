"""The train state: everything a resumed run needs, as one replicated pytree."""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # optimiser steps taken
  params: nnx.State  # float32 parameters
  batch_stats: nnx.State  # BN running statistics, float32
  opt_state: optax.OptState


@flax.struct.dataclass
class ModelGraphs:
  """The static structure of the model in training and in evaluation mode."""

  train: nnx.GraphDef = flax.struct.field(pytree_node=False)
  eval: nnx.GraphDef = flax.struct.field(pytree_node=False)


def create_train_state(
  model: nnx.Module, tx: optax.GradientTransformation
) -> tuple[TrainState, ModelGraphs]:
  model.eval()
  eval_graph, _, _ = nnx.split(model, nnx.Param, nnx.BatchStat)
  model.train()
  train_graph, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  state = TrainState(jnp.zeros((), jnp.int32), params, batch_stats, tx.init(params))
  return state, ModelGraphs(train_graph, eval_graph)


def model_of(graphs: ModelGraphs, state: TrainState, train: bool = False) -> nnx.Module:
  return nnx.merge(
    graphs.train if train else graphs.eval, state.params, state.batch_stats, copy=True
  )
