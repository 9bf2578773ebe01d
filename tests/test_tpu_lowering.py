"""The TPU program exists: SELFYNet-R50's train and eval steps lower for TPU on this CPU machine,
with the runtime policy as it resolves there, and call nothing that only GPUs have.

No TPU is needed to lower for one. The default policy resolves by jax.default_backend() when a
model is traced, so the test traces with it reporting "tpu": the forms `auto` picks are then the
TPU's, not the CPU's.
"""

import re

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from configs import ssv1
from input_pipeline.crop_sizes import crop_bounds
from stss_jax import runtime
from stss_jax.models import build_model
from stss_jax.train import optimizer, steps
from stss_jax.train.state import create_train_state

# Custom calls a TPU program may hold: XLA's sharding annotations and Mosaic TPU kernels. Anything
# else (cuDNN, cuBLAS, Triton, CUDA kernels) exists on GPUs only.
TPU_CUSTOM_CALLS = {
  "Sharding",
  "SPMDFullToShardShape",
  "SPMDShardToFullShape",
  "tpu_custom_call",
  "annotate_device_placement",
}


def custom_calls(stablehlo: str) -> set[str]:
  return set(re.findall(r"custom_call @([\w.$-]+)", stablehlo)) | set(
    re.findall(r'call_target_name = "([^"]+)"', stablehlo)
  )


@pytest.fixture
def on_tpu(monkeypatch):
  """jax.default_backend() as on a TPU VM, where the project's code asks it."""
  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")


def lowered_steps() -> dict[str, str]:
  """StableHLO of the SSv1 recipe's train and eval steps (bf16, 8 clips of 8 x 224 x 224)."""
  config = ssv1.get_config()
  config.model.dtype = "bfloat16"
  config.batch_size = 8
  model = build_model(config, nnx.Rngs(0))
  tx = optimizer.build_optimizer(config)
  state, graphs = create_train_state(model, tx)
  state = jax.eval_shape(lambda: state)
  batch = {
    "clips": jax.ShapeDtypeStruct((8, 8, 224, 224, 3), jnp.uint8),
    "labels": jax.ShapeDtypeStruct((8,), jnp.int32),
  }
  train_step = steps.make_train_step(
    graphs,
    tx,
    optimizer.learning_rate_schedule(config),
    config.label_smoothing,
    1,
    config.input.image_size,
    crop_bounds(config.input.train_crop, config.input.resize_hw),
  )
  rng = jax.eval_shape(lambda: jax.random.key(0))
  tpu = {"lowering_platforms": ("tpu",)}
  return {
    "train": jax.jit(train_step).trace(state, batch, rng).lower(**tpu).as_text(),
    "eval": jax.jit(steps.make_eval_step(graphs)).trace(state, batch).lower(**tpu).as_text(),
  }


def test_selfynet_r50_steps_lower_for_tpu_with_no_gpu_only_call(on_tpu):
  with runtime.use(runtime.Policy()):
    programs = lowered_steps()
  for name, program in programs.items():
    assert "stablehlo" in program, name
    assert custom_calls(program) <= TPU_CUSTOM_CALLS, (name, custom_calls(program))


def test_a_gpu_only_call_on_the_tpu_path_is_caught():
  """The check itself: a program holding a Triton call, as a GPU-only form would emit."""
  program = 'stablehlo.custom_call @__gpu$xla.gpu.triton(%0) {backend_config = ""}'
  assert custom_calls(program) - TPU_CUSTOM_CALLS == {"__gpu$xla.gpu.triton"}
