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


def check_batch_size(global_batch: int, mesh: Mesh, grad_accum_steps: int = 1) -> int:
  """The per-host batch, or an error naming batch_size (and grad_accum_steps) and the device count.

  Every device must hold an equal share of every micro-batch: batch_size must be a multiple of
  devices x grad_accum_steps.
  """
  data_devices = mesh.shape["data"]
  multiple = data_devices * grad_accum_steps
  if global_batch % multiple:
    accum = f" x config.grad_accum_steps = {grad_accum_steps}" if grad_accum_steps > 1 else ""
    raise ValueError(
      f"config.batch_size = {global_batch} is not divisible by the {data_devices} data-parallel "
      f"devices{accum}; use a multiple of {multiple}"
    )
  return global_batch // jax.process_count()


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each host's slice into arrays sharded over the whole mesh."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
