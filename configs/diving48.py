"""Diving-48 (V2 labels) with SELFYNet-R50, 16 frames.

python main.py --config=configs/diving48.py --workdir=runs/diving48 --config.dataset.data_dir=DATA
"""

from configs import common


def get_config(arg=None):
  """`arg`: frames per clip, 16 (default) or 8."""
  return common.video_config(
    "diving48", num_classes=48, train_clips=15027, num_frames=int(arg or 16)
  )
