"""A model directory as a TensorFlow SavedModel, for TF Serving or tf.saved_model.load without JAX.

  python -m stss_jax.export --checkpoint=runs/ssv2/model --output=exported/ssv2

The SavedModel's `serving_default` signature takes `clips`, normalised clips (N, T, S, S, 3)
float32 (ImageNet mean and std, as `predict --clip` reads them; N is free) and returns `logits`
(N, classes) float32, the model in evaluation mode. The network is converted by jax2tf into
StableHLO for the CPU, CUDA and TPU platforms (whichever the serving machine has); its weights are
TF variables. OUTPUT/stss_export.json says what the input must be (frames, size, mean and std)
and names the classes when they are known (those the model directory records, or --class_names).
"""

from __future__ import annotations

import json
import sys
import typing

import jax
import numpy as np
from absl import flags
from etils import epath
from flax import nnx

if typing.TYPE_CHECKING:
  import tensorflow as tf

from input_pipeline import normalization
from stss_jax import cli, model_dir
from stss_jax.models import build_model

SIGNATURE_INPUT = "clips"
SIGNATURE_OUTPUT = "logits"
DESCRIPTION_FILE = "stss_export.json"
PLATFORMS = ("cpu", "cuda", "tpu")


def serving_module(
  model: nnx.Module, num_frames: int, image_size: int, platforms: tuple[str, ...] = PLATFORMS
) -> tf.Module:
  """A tf.Module whose `serve` is the eval-mode network, its weights held as tf.Variables."""
  # Imported here: without TensorFlow, the command then ends in cli's one-line error, not a
  # traceback.
  import tensorflow as tf
  from jax.experimental import jax2tf

  model.eval()
  graph, variables = nnx.split(model)
  leaves, treedef = jax.tree.flatten(variables)

  def logits(weights, clips):
    return nnx.merge(graph, jax.tree.unflatten(treedef, weights))(clips).astype(np.float32)

  converted = jax2tf.convert(
    logits,
    polymorphic_shapes=[None, f"(n, {num_frames}, {image_size}, {image_size}, 3)"],
    native_serialization_platforms=platforms,
    with_gradient=False,
  )
  module = tf.Module()
  # A list, which tf.Module tracks (it does not see into NNX state trees), in the tree's leaf order.
  module.weights = [tf.Variable(np.asarray(leaf), trainable=False) for leaf in leaves]
  spec = tf.TensorSpec(
    (None, num_frames, image_size, image_size, 3), tf.float32, name=SIGNATURE_INPUT
  )

  @tf.function(input_signature=[spec], autograph=False)
  def serve(clips):
    return {SIGNATURE_OUTPUT: converted(module.weights, clips)}

  module.serve = serve
  return module


def export(
  config,
  checkpoint: str,
  output: str,
  class_names: list[str] | None = None,
  platforms: tuple[str, ...] = PLATFORMS,
) -> epath.Path:
  """Writes the SavedModel of a model directory to a new (or empty) `output`; returns it."""
  import tensorflow as tf

  output = epath.Path(output)
  if output.exists() and any(output.iterdir()):
    raise FileExistsError(f"--output {output} exists and is not empty; choose a new directory")
  model = build_model(config)
  model_dir.restore_for_inference(checkpoint, model, config)
  size, frames = config.input.image_size, config.input.num_frames
  module = serving_module(model, frames, size, platforms)
  tf.saved_model.save(module, str(output), signatures={"serving_default": module.serve})
  description = {
    "signature": "serving_default",
    "input": {
      "name": SIGNATURE_INPUT,
      "shape": [None, frames, size, size, 3],
      "dtype": "float32",
      "normalization": {
        "mean": normalization.MEAN.tolist(),
        "std": normalization.STD.tolist(),
        "of": "RGB values in [0, 1]",
      },
    },
    "output": {
      "name": SIGNATURE_OUTPUT,
      "shape": [None, config.dataset.num_classes],
      "dtype": "float32",
    },
    "platforms": list(platforms),
    "architecture": model_dir.architecture(config),
    "class_names": class_names,
  }
  (output / DESCRIPTION_FILE).write_text(json.dumps(description, indent=1) + "\n")
  return output


def define_flags(flag_values: flags.FlagValues, argv) -> None:
  cli.define_config(flag_values, argv)
  flags.DEFINE_string(
    "checkpoint",
    None,
    "Model directory (convert, or the trainer's WORKDIR/model).",
    flag_values=flag_values,
  )
  flags.DEFINE_string(
    "output", None, "New directory for the SavedModel (local or gs://).", flag_values=flag_values
  )
  flags.DEFINE_string(
    "class_names",
    None,
    "File of class names, one a line, recorded in stss_export.json "
    "(default: those the checkpoint records).",
    flag_values=flag_values,
  )
  flags.DEFINE_list(
    "platforms", list(PLATFORMS), "Platforms the SavedModel runs on.", flag_values=flag_values
  )
  flags.mark_flags_as_required(["checkpoint", "output"], flag_values=flag_values)


def run(flag_values: flags.FlagValues) -> int:
  from stss_jax.predict import class_names

  config = flag_values.config
  names = class_names(config, flag_values.class_names, flag_values.checkpoint)
  output = export(
    config, flag_values.checkpoint, flag_values.output, names, tuple(flag_values.platforms)
  )
  print(
    f"wrote SavedModel to {output}: signature serving_default, {SIGNATURE_INPUT} "
    f"(N, {config.input.num_frames}, {config.input.image_size}, {config.input.image_size}, 3) "
    "float32 -> "
    f"{SIGNATURE_OUTPUT} (N, {config.dataset.num_classes}) float32; platforms "
    f"{', '.join(flag_values.platforms)}"
  )
  return 0


def main(argv=None) -> int:
  return cli.main(__doc__, define_flags, run, argv, model_configs={"config": "checkpoint"})


if __name__ == "__main__":
  sys.exit(main())
