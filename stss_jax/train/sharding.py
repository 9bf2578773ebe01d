"""One data-parallel mesh for every machine: one CPU, GPUs, several hosts, TPU pods.

The mesh has a 'data' axis over every device (and a 'model' axis of size config.mesh.model,
1 by default, kept for model parallelism). Batches are split along 'data'; the train state is
replicated. Each host feeds only its own slice of the global batch.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def make_mesh(model_axis: int = 1) -> Mesh:
  devices = jax.devices()
  if model_axis < 1 or len(devices) % model_axis:
    raise ValueError(f"config.mesh.model = {model_axis} must divide the {len(devices)} devices")
  grid = np.asarray(devices).reshape(len(devices) // model_axis, model_axis)
  return Mesh(grid, ("data", "model"))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec("data"))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def check_batch_size(global_batch: int, mesh: Mesh) -> int:
  """The per-host batch, or an error naming batch_size and the device and host counts."""
  data_devices = mesh.shape["data"]
  if global_batch % data_devices:
    raise ValueError(
        f"config.batch_size = {global_batch} is not divisible by the {data_devices} data-parallel "
        f"devices; use a multiple of {data_devices}"
    )
  return global_batch // jax.process_count()


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each host's slice into arrays sharded over the whole mesh."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
