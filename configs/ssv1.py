"""Something-Something V1 with the official SELFYNet-R50 (TSM-R50 + SELFY), 8 frames.

python main.py --config=configs/ssv1.py --workdir=runs/ssv1 --config.dataset.data_dir=DATA
python main.py --config=configs/ssv1.py:16 --workdir=runs/ssv1_16f    # 16 frames
python -m stss_jax.complexity --config=configs/ssv1.py
"""

from configs import common


def get_config(arg=None):
  """`arg`: frames per clip, 8 (default) or 16."""
  config = common.video_config("ssv1", num_classes=174, train_clips=86017, num_frames=int(arg or 8))
  # "Pushing something from left to right" and the like: a flip swaps them (docs/conventions.md).
  config.dataset.no_flip_labels = (86, 87, 93, 94, 166, 167)
  return config
