"""Eval-mode logits of a model checkpoint for a clip array, or the classes of a video.

  python -m stss_jax.predict --checkpoint=DIR --clip=clip.npy --output=logits.npy
  python -m stss_jax.predict --checkpoint=DIR --video=12345.webm
  python -m stss_jax.predict --checkpoint=DIR --video=long.mp4 --window=2s --stride=1s \
      --json=long.json

DIR (WORKDIR/model, or convert's) records the config it was trained with and its class names;
--config (a config file, e.g. configs/ssv2.py, with the training run's overrides) is needed only
for model directories written before they did.

`clip.npy` holds normalised clips (N, T, H, W, 3) float32 (ImageNet mean/std, as fed to the
model); `logits.npy` receives (N, classes) float32. A video (file or frame folder) is sampled
and cropped as in evaluation (every view of config.input.eval_clips x eval_crops) and its five
most likely classes, the softmax averaged over the views, are printed. With --window, the video
is cut into windows of that length every --stride (frames, or seconds with an "s"), each is
sampled as one evaluation video, and each window's classes with its time span are printed and,
with --json, written with the average over the windows.
"""

from __future__ import annotations

import json
import sys

import jax
import numpy as np
from absl import flags
from etils import epath
from tqdm import tqdm

from input_pipeline.arrays import load_clips
from input_pipeline.normalization import model_input
from stss_jax import cli, evaluation, model_dir
from stss_jax.models import build_model

TOP_K = 5


@jax.jit
def _logits(model, clips):
  return model(model_input(clips))


def predict(model, clips: np.ndarray) -> np.ndarray:
  """Eval-mode logits (N, classes) float32 of normalised float clips or uint8 pixel clips, which
  are normalised on the device (compiled once per clip shape and dtype)."""
  model.eval()
  return np.asarray(_logits(model, clips), np.float32)


def evaluation_source(config):
  """A VideoSource that samples and crops videos as config's evaluation does."""
  from input_pipeline.video_source import FileSplit, VideoSource

  nothing = FileSplit([], config.dataset.frame_template)
  return VideoSource(
    nothing,
    nothing,
    [],
    config.input.num_frames,
    config.input.image_size,
    tuple(config.input.resize_hw),
    dense=config.input.dense_sampling,
    eval_clips=config.input.eval_clips,
    eval_crops=config.input.eval_crops,
  )


def window_predictions(
  model,
  config,
  path: str,
  window: str | None = None,
  stride: str | None = None,
  fps: float | None = None,
  batch_windows: int = 8,
  progress: bool = True,
) -> dict:
  """Logits of every view of every window of a video, and its windows: {'video': LongVideo,
  'windows': [Window], 'logits': (windows * views, classes)}; one window over the whole video
  when `window` is None."""
  import tensorflow as tf

  from input_pipeline import windows as windows_lib

  source = evaluation_source(config)
  video = windows_lib.LongVideo(path, config.dataset.frame_template, fps)
  length = windows_lib.parse_span(window, video.fps, "window") if window else None
  step = windows_lib.parse_span(stride, video.fps, "stride") if stride else None
  if step and not length:
    raise ValueError("--stride needs --window")
  planned = windows_lib.plan(
    video.num_frames, length, step or (length and max(1, length // 2)), source.eval_indices
  )
  logits, views = [], []
  with tqdm(
    total=len(planned),
    unit="window",
    desc=video.path.name,
    disable=not progress or len(planned) == 1,
    file=sys.stderr,
    dynamic_ncols=True,
  ) as bar:
    for _, frames in video.read(planned):
      views.append(source.eval_views(tf.constant(frames), video.encoded).numpy())
      if len(views) == batch_windows:
        logits.append(predict(model, np.concatenate(views)))
        views = []
        bar.update(batch_windows)
    if views:
      logits.append(predict(model, np.concatenate(views)))
      bar.update(len(views))
  return {"video": video, "windows": planned, "logits": np.concatenate(logits)}


def top_classes(probabilities: np.ndarray, names: list[str] | None, k: int = TOP_K) -> list[dict]:
  return [
    {
      "class": int(c),
      "name": names[c] if names and c < len(names) else f"class {c}",
      "probability": float(probabilities[c]),
    }
    for c in np.argsort(-probabilities)[:k]
  ]


def window_report(result: dict, views: int, names: list[str] | None) -> dict:
  """The JSON report: each window's span and top classes, and the average over the windows."""
  video, planned = result["video"], result["windows"]
  probabilities = evaluation.view_probabilities(result["logits"], views)
  seconds = (lambda frame: round(frame / video.fps, 3)) if video.fps else (lambda frame: None)
  return {
    "video": str(video.path),
    "frames": video.num_frames,
    "fps": video.fps,
    "windows": [
      {
        "start_frame": w.start,
        "end_frame": w.end,
        "start_s": seconds(w.start),
        "end_s": seconds(w.end),
        "top": top_classes(p, names),
      }
      for w, p in zip(planned, probabilities)
    ],
    "average": {"top": top_classes(probabilities.mean(0), names)},
  }


def class_names(config, path: str | None, checkpoint: str | None = None) -> list[str] | None:
  """The class names in a file of one a line, those the model directory `checkpoint` records,
  the synthetic demo's own, or None."""
  if path:
    from input_pipeline.labels import read_text

    return [line.strip() for line in read_text(path).splitlines() if line.strip()]
  recorded = model_dir.class_names(checkpoint) if checkpoint else None
  if recorded:
    return recorded
  if config.dataset.name == "synthetic":  # the demo's classes need no file
    from input_pipeline.sources import build_source

    return list(build_source(config).class_names)
  return None


def define_flags(flag_values: flags.FlagValues, argv) -> None:
  cli.define_config(flag_values, argv)
  flags.DEFINE_string(
    "checkpoint", None, "Model directory (convert or trainer).", flag_values=flag_values
  )
  flags.mark_flag_as_required("checkpoint", flag_values=flag_values)
  flags.DEFINE_string(
    "clip", None, ".npy file of clips (N, T, H, W, 3) float32.", flag_values=flag_values
  )
  flags.DEFINE_string(
    "video", None, "A video file or a folder of frames, instead of --clip.", flag_values=flag_values
  )
  flags.DEFINE_string(
    "class_names",
    None,
    "File of class names, one a line, for --video (default: those the checkpoint records).",
    flag_values=flag_values,
  )
  flags.DEFINE_string(
    "output",
    None,
    ".npy file for the logits (N, classes); with --video one row per view (window after window).",
    flag_values=flag_values,
  )
  flags.DEFINE_string(
    "window",
    None,
    "--video: window length, frames (64) or seconds (2.5s); the whole video when not given.",
    flag_values=flag_values,
  )
  flags.DEFINE_string(
    "stride",
    None,
    "--video: distance between window starts, frames or seconds; half the window when not given.",
    flag_values=flag_values,
  )
  flags.DEFINE_float(
    "fps",
    None,
    "--video: frame rate of a frame folder (files carry their own), for "
    "spans in seconds and the times in the report.",
    flag_values=flag_values,
  )
  flags.DEFINE_string(
    "json",
    None,
    "--video: JSON file for each window's top classes and time span, and their average.",
    flag_values=flag_values,
  )
  flags.DEFINE_integer(
    "batch_windows", 8, "--video: windows run through the model at once.", flag_values=flag_values
  )


def run(flag_values: flags.FlagValues) -> int:
  config = flag_values.config
  if bool(flag_values.clip) == bool(flag_values.video):
    raise ValueError("give one of --clip or --video")
  if flag_values.clip and not flag_values.output:
    raise ValueError("--clip needs --output")
  video_only = ("window", "stride", "fps", "json")
  if flag_values.clip and any(flag_values[name].value is not None for name in video_only):
    raise ValueError(f"--{', --'.join(video_only)} are for --video")
  if flag_values.batch_windows < 1:
    raise ValueError(f"--batch_windows={flag_values.batch_windows} must be at least 1")
  names = class_names(config, flag_values.class_names, flag_values.checkpoint)
  model = build_model(config)
  model_dir.restore_for_inference(flag_values.checkpoint, model, config)
  if flag_values.clip:
    logits = predict(model, load_clips(flag_values.clip))
    _save_logits(flag_values.output, logits)
    print(f"top-1 classes {logits.argmax(-1).tolist()}")
    return 0
  result = window_predictions(
    model,
    config,
    flag_values.video,
    flag_values.window,
    flag_values.stride,
    flag_values.fps,
    flag_values.batch_windows,
  )
  if flag_values.output:
    _save_logits(flag_values.output, result["logits"])
  report = window_report(result, config.input.eval_clips * config.input.eval_crops, names)
  if len(report["windows"]) > 1:
    print(f"{len(report['windows'])} windows over {report['frames']} frames; top class of each:")
    for w in report["windows"]:
      span = (
        f"{w['start_s']:8.2f}-{w['end_s']:8.2f} s"
        if w["start_s"] is not None
        else f"frames {w['start_frame']}-{w['end_frame']}"
      )
      best = w["top"][0]
      print(f"  {span}  {best['probability']:7.2%}  {best['name']}")
    print("averaged over the windows:")
  for entry in report["average"]["top"]:
    print(f"{entry['probability']:7.2%}  {entry['name']}")
  if flag_values.json:
    epath.Path(flag_values.json).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {len(report['windows'])} window(s) to {flag_values.json}")
  return 0


def _save_logits(path: str, logits: np.ndarray) -> None:
  with epath.Path(path).open("wb") as f:
    np.save(f, logits)
  print(f"wrote logits {logits.shape} to {path}")


def main(argv=None) -> int:
  return cli.main(__doc__, define_flags, run, argv, model_configs={"config": "checkpoint"})


if __name__ == "__main__":
  sys.exit(main())
