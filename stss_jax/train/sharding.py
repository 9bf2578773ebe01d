"""One data-parallel mesh for every machine: one CPU, GPUs, several hosts, TPU pods.

The mesh has one axis, 'data', over the devices. Batches are split along it; the train state is
replicated. Each host feeds only its own slice of the global batch.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A data-parallel mesh over `devices` (every device of every host by default)."""
  return Mesh(np.asarray(jax.devices() if devices is None else devices), ("data",))


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
