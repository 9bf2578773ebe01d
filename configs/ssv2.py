"""Something-Something V2 with SELFYNet-R50, 8 frames (the SSv1 recipe).

python main.py --config=configs/ssv2.py --workdir=runs/ssv2 --config.dataset.data_dir=DATA
python main.py --config=configs/ssv2.py:16 --workdir=runs/ssv2_16f    # 16 frames
"""

from configs import common


def get_config(arg=None):
  """`arg`: frames per clip, 8 (default) or 16."""
  config = common.video_config(
    "ssv2", num_classes=174, train_clips=168913, num_frames=int(arg or 8)
  )
  # SSv2 keeps SSv1's 174 classes in the same (alphabetical) order, so the direction-bearing
  # classes have the same ids: "Pulling/Pushing something from left to right" (and back), "Turning
  # the camera left/right while filming something". The run logs their names from the labels file.
  config.dataset.no_flip_labels = (86, 87, 93, 94, 166, 167)
  return config
