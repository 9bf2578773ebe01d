"""Eval-mode logits of a model checkpoint for a clip array or a video.

  python -m stss_jax.predict --config=configs/ssv1.py --checkpoint=DIR --clip=clip.npy \
      --output=logits.npy
  python -m stss_jax.predict --config=configs/ssv2.py --checkpoint=DIR --video=12345.webm \
      --class_names=classes.txt

`clip.npy` holds normalised clips (N, T, H, W, 3) float32 (ImageNet mean/std, as fed to the
model); `logits.npy` receives (N, classes) float32. A video (file or frame folder) is sampled
and cropped as in evaluation (every view of config.input.eval_clips x eval_crops), and its five
most likely classes, the softmax averaged over the views, are printed.
"""
from __future__ import annotations

import pathlib
import sys

import jax
import numpy as np
from absl import flags

from input_pipeline.arrays import load_clips
from stss_jax import cli, evaluation, model_dir
from stss_jax.models import build_model


def predict(model, clips: np.ndarray) -> np.ndarray:
  """Eval-mode logits (N, classes) float32."""
  model.eval()
  return np.asarray(jax.jit(lambda m, x: m(x))(model, clips), np.float32)


def video_views(config, path: str) -> np.ndarray:
  """The normalised evaluation views (views, T, S, S, 3) of a video file or frame folder."""
  import tensorflow as tf

  from input_pipeline.labels import Video
  from input_pipeline.video_source import FileSplit, VideoSource

  split = FileSplit([Video(pathlib.Path(path).stem, pathlib.Path(path), -1)], config.dataset.frame_template)
  source = VideoSource(split, split, [], config.input.num_frames, config.input.image_size,
                       tuple(config.input.resize_hw), eval_clips=config.input.eval_clips,
                       eval_crops=config.input.eval_crops)
  frames, *_ = source.eval_example(split, 0)
  return np.asarray(source.eval_views(tf.constant(frames), split.encoded), np.float32)


def class_names(config, path: str | None) -> list[str] | None:
  """The class names in a file of one a line, the synthetic demo's own, or None."""
  if path:
    from input_pipeline.labels import read_text
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]
  if config.dataset.name == "synthetic":  # the demo's classes need no file
    from input_pipeline.sources import build_source
    return list(build_source(config).class_names)
  return None


def define_flags(flag_values: flags.FlagValues, argv) -> None:
  cli.define_config(flag_values, argv)
  flags.DEFINE_string("checkpoint", None, "Model directory (convert or trainer).", flag_values=flag_values)
  flags.mark_flag_as_required("checkpoint", flag_values=flag_values)
  flags.DEFINE_string("clip", None, ".npy file of clips (N, T, H, W, 3) float32.", flag_values=flag_values)
  flags.DEFINE_string("video", None, "A video file or a folder of frames, instead of --clip.", flag_values=flag_values)
  flags.DEFINE_string("class_names", None, "File of class names, one a line, for --video (the synthetic demo's "
                      "are known).", flag_values=flag_values)
  flags.DEFINE_string("output", None, ".npy file for the logits (N, classes); with --video one row per view.",
                    flag_values=flag_values)


def run(flag_values: flags.FlagValues) -> int:
  config = flag_values.config
  if bool(flag_values.clip) == bool(flag_values.video):
    raise ValueError("give one of --clip or --video")
  if flag_values.clip and not flag_values.output:
    raise ValueError("--clip needs --output")
  clips = load_clips(flag_values.clip) if flag_values.clip else video_views(config, flag_values.video)
  names = class_names(config, flag_values.class_names)
  model = build_model(config)
  model_dir.restore(flag_values.checkpoint, model, config)
  logits = predict(model, clips)
  if flag_values.output:
    np.save(flag_values.output, logits)
    print(f"wrote logits {logits.shape} to {flag_values.output}")
  if flag_values.video:
    probabilities = evaluation.view_probabilities(logits, len(logits))[0]
    for k in np.argsort(-probabilities)[:5]:
      label = names[k] if names and k < len(names) else f"class {k}"
      print(f"{probabilities[k]:7.2%}  {label}")
  else:
    print(f"top-1 classes {logits.argmax(-1).tolist()}")
  return 0


def main(argv=None) -> int:
  return cli.main(__doc__, define_flags, run, argv)


if __name__ == "__main__":
  sys.exit(main())
