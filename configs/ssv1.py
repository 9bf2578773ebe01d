"""Something-Something V1 with the official SELFYNet-R50 (TSM-R50 + SELFY), 8 frames.

  python main.py --config=configs/ssv1.py --workdir=runs/ssv1
  python -m stss_jax.complexity --config=configs/ssv1.py
"""
import ml_collections

from configs import common


def get_config(arg=None):
  del arg
  config = ml_collections.ConfigDict()
  config.seed = 0  # root of every random key (init, dropout, data order)
  config.dataset = ml_collections.ConfigDict(dict(
      name="ssv1",  # dataset name
      num_classes=174,  # classes in the label file
  ))
  config.input = ml_collections.ConfigDict(dict(
      num_frames=8,  # TSN segments per clip, one frame each
      image_size=224,  # side of the square crop fed to the model, pixels
  ))
  config.model = common.model_config(depth=50)
  config.batch_size = 64  # global, in clips
  config.total_steps = 50 * 86017 // 64  # 50 epochs of the SSv1 training split
  config.eval_every_steps = 86017 // 64  # once per epoch
  config.checkpoint_every_steps = 86017 // 64  # once per epoch
  return config
