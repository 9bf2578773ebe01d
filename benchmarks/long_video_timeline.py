"""Does `predict --video --window` follow a change of action? A generated video whose motion
changes halfway, through the command a user types, for a trained demo model.

  python main.py --config=configs/default.py --workdir=runs/default    # the demo, ~10 CPU minutes
  python -m benchmarks.long_video_timeline --checkpoint=runs/default/model \\
      --output=benchmarks/results/long_video_timeline.md

Each video is two synthetic clips of the validation split with the same object and background:
`--frames_each` frames of one motion, then as many of its time-reversed twin (right then left,
down then up, approaching then receding), encoded as H.264 at 12 frames/s. predict runs with
windows of the model's own frame count (so a window's frames are consecutive, as in training)
and the given stride. A window is "before" or "after" when it lies wholly on one side of the
change; the report counts how many of those have the right top-1 and how far from the change the
timeline's top-1 first shows the second motion.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile

import av
import numpy as np

from configs import default
from input_pipeline import normalization, synthetic
from stss_jax import predict

FPS = 12
PAIRS = ((0, 1), (2, 3), (4, 5))  # indices into synthetic.CLASSES: each motion and its reverse


def write_video(path: pathlib.Path, clip: np.ndarray) -> pathlib.Path:
  with av.open(str(path), "w") as container:
    stream = container.add_stream("libx264", rate=FPS, options={"crf": "12"})
    stream.width, stream.height, stream.pix_fmt = clip.shape[2], clip.shape[1], "yuv420p"
    for image in clip:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
    container.mux(stream.encode())
  return path


def two_motion_video(
  folder: pathlib.Path, index: int, first: int, second: int, frames_each: int, image_size: int
) -> pathlib.Path:
  data = synthetic.SyntheticMotion(num_frames=frames_each, image_size=image_size)
  one, _ = data.clip("validation", index, label=first)
  two, _ = data.clip("validation", index, label=second)
  clip = normalization.to_uint8(np.concatenate([one, two]))
  return write_video(
    folder / f"{synthetic.CLASSES[first].replace(' ', '_')}_then_"
    f"{synthetic.CLASSES[second].replace(' ', '_')}_{index}.mp4",
    clip,
  )


def timeline(
  checkpoint: str, video: pathlib.Path, window: int, stride: int, report: pathlib.Path
) -> dict:
  status = predict.main(
    [
      "predict",
      "--config=configs/default.py",
      f"--checkpoint={checkpoint}",
      f"--video={video}",
      f"--window={window}",
      f"--stride={stride}",
      f"--json={report}",
    ]
  )
  if status:
    raise SystemExit(f"predict failed on {video} (status {status})")
  return json.loads(report.read_text())


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--checkpoint", required=True, help="model directory of a configs/default.py run"
  )
  parser.add_argument("--output", default="", help="markdown file for the timelines")
  parser.add_argument("--videos", type=int, default=3, help="videos per motion pair")
  parser.add_argument("--frames_each", type=int, default=32)
  parser.add_argument("--stride", type=int, default=4, help="frames between window starts")
  args = parser.parse_args()
  config = default.get_config()
  window = config.input.num_frames
  change = args.frames_each
  lines, before_right, after_right, before_total, after_total, delays = [], 0, 0, 0, 0, []
  with tempfile.TemporaryDirectory() as folder:
    folder = pathlib.Path(folder)
    for first, second in PAIRS:
      for index in range(args.videos):
        video = two_motion_video(
          folder, index, first, second, args.frames_each, config.input.image_size
        )
        result = timeline(args.checkpoint, video, window, args.stride, folder / "report.json")
        row = []
        switched = None
        for w in result["windows"]:
          top = w["top"][0]["class"]
          if w["end_frame"] <= change:
            before_total += 1
            before_right += top == first
          elif w["start_frame"] >= change:
            after_total += 1
            after_right += top == second
          if switched is None and top == second:
            switched = w["end_frame"] - change
          row.append("F" if top == first else "S" if top == second else "?")
        delays.append(switched)
        lines.append(
          f"| {video.name} | {''.join(row)} | "
          f"{'never' if switched is None else f'{switched:+d} frames'} |"
        )
  head = [
    "# Long-video timeline: a change of motion halfway",
    "",
    f"`python -m benchmarks.long_video_timeline --checkpoint={args.checkpoint}`: {len(delays)} "
    "generated videos of "
    f"{2 * args.frames_each} frames ({args.frames_each} of a motion, then its reverse; change at "
    f"frame {change}), "
    f"windows of {window} frames every {args.stride}. Timeline: one letter a window, F when its "
    "top-1 is the "
    "first motion, S the second, ? another class. 'Switch' is the end of the first window whose "
    "top-1 is "
    "the second motion, in frames after the change (a window ending at the change + "
    f"{window} frames lies wholly after it).",
    "",
    f"Windows wholly before the change with the first motion as top-1: {before_right} of "
    f"{before_total}; "
    f"wholly after it with the second: {after_right} of {after_total}. Videos whose timeline first "
    "shows the "
    f"second motion within one window ({window} frames) of the change, either side: "
    f"{sum(d is not None and abs(d) <= window for d in delays)} "
    f"of {len(delays)}.",
    "",
    "| video | timeline | switch |",
    "|---|---|---|",
  ]
  text = "\n".join(head + lines)
  print(text)
  if args.output:
    pathlib.Path(args.output).write_text(text + "\n")
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
  main()
