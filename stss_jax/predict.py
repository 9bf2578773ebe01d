"""Eval-mode logits of a model checkpoint for a clip array or a video.

  python -m stss_jax.predict --config=configs/ssv1.py --checkpoint=DIR --clip=clip.npy \
      --output=logits.npy
  python -m stss_jax.predict --config=configs/ssv2.py --checkpoint=DIR --video=12345.webm \
      --class_names=classes.txt

`clip.npy` holds normalised clips (N, T, H, W, 3) float32 (ImageNet mean/std, as fed to the
model); `logits.npy` receives (N, classes) float32. A video (file or frame folder) is sampled
and cropped as in evaluation, and its five most likely classes are printed.
"""
from __future__ import annotations

import pathlib
import sys

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from input_pipeline.arrays import load_clips
from stss_jax.models import build_model
from stss_jax.train.checkpoints import restore_model


def predict(model, clips: np.ndarray) -> np.ndarray:
  """Eval-mode logits (N, classes) float32."""
  model.eval()
  return np.asarray(jax.jit(lambda m, x: m(x))(model, clips), np.float32)


def video_clip(config, path: str) -> np.ndarray:
  """One normalised clip (1, T, S, S, 3) of a video file or frame folder, sampled and cropped as
  in evaluation."""
  import tensorflow as tf

  from input_pipeline.labels import Video
  from input_pipeline.video_source import FileSplit, VideoSource

  split = FileSplit([Video(pathlib.Path(path).stem, pathlib.Path(path), -1)], config.dataset.frame_template)
  source = VideoSource(split, split, [], config.input.num_frames, config.input.image_size,
                       tuple(config.input.resize_hw))
  frames, *_ = source.eval_example(split, 0)
  clip = source.eval_views(tf.constant(frames), split.encoded)[0]
  return np.asarray(clip, np.float32)[None]


def main(argv):
  del argv
  FLAGS = flags.FLAGS
  config = FLAGS.config
  if config is None or not FLAGS.checkpoint or bool(FLAGS.clip) == bool(FLAGS.video):
    raise app.UsageError("--config, --checkpoint and one of --clip or --video are required")
  if FLAGS.clip and not FLAGS.output:
    raise app.UsageError("--clip needs --output")
  try:
    clips = load_clips(FLAGS.clip) if FLAGS.clip else video_clip(config, FLAGS.video)
    names = None
    if FLAGS.class_names:
      names = pathlib.Path(FLAGS.class_names).read_text().splitlines()
    model = build_model(config)
    restore_model(FLAGS.checkpoint, model, config)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  logits = predict(model, clips)
  if FLAGS.output:
    np.save(FLAGS.output, logits)
    print(f"wrote logits {logits.shape} to {FLAGS.output}")
  probabilities = np.exp(logits - logits.max(-1, keepdims=True))
  probabilities /= probabilities.sum(-1, keepdims=True)
  for row in probabilities[:1] if FLAGS.video else []:
    for k in np.argsort(-row)[:5]:
      label = names[k] if names and k < len(names) else f"class {k}"
      print(f"{row[k]:7.2%}  {label}")
  if FLAGS.clip:
    print(f"top-1 classes {logits.argmax(-1).tolist()}")
  return 0


def _define_flags():
  """Only when run as a command, so that importing this module defines no flags."""
  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
  flags.DEFINE_string("checkpoint", None, "Model checkpoint directory (convert or trainer).")
  flags.DEFINE_string("clip", None, ".npy file of clips (N, T, H, W, 3) float32.")
  flags.DEFINE_string("video", None, "A video file or a folder of frames, instead of --clip.")
  flags.DEFINE_string("class_names", None, "File of class names, one a line, for --video.")
  flags.DEFINE_string("output", None, ".npy file to write logits (N, classes) to.")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
