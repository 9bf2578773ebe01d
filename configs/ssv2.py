"""Something-Something V2 with SELFYNet-R50, 8 frames (the SSv1 recipe).

  python main.py --config=configs/ssv2.py --workdir=runs/ssv2 --config.dataset.data_dir=DATA
  python main.py --config=configs/ssv2.py:16 --workdir=runs/ssv2_16f    # 16 frames
"""
from configs import common


def get_config(arg=None):
  """`arg`: frames per clip, 8 (default) or 16."""
  return common.video_config("ssv2", num_classes=174, train_clips=168913, num_frames=int(arg or 8))
