"""FineGym Gym99 (or Gym288 with `:288`) with SELFYNet-R50, 8 frames.

python main.py --config=configs/finegym.py --workdir=runs/gym99 --config.dataset.data_dir=DATA
python main.py --config=configs/finegym.py:288 --workdir=runs/gym288 --config.dataset.data_dir=DATA
"""

from configs import common

SUBSETS = {"99": (99, 20484), "288": (288, 28739)}  # classes, training clips


def get_config(arg=None):
  """`arg`: the Gym subset, "99" (default) or "288"."""
  subset = str(arg or "99")
  if subset not in SUBSETS:
    raise ValueError(f"finegym config argument {subset!r}: use one of {sorted(SUBSETS)}")
  classes, train_clips = SUBSETS[subset]
  return common.video_config("finegym", num_classes=classes, train_clips=train_clips)
