"""The embedded demo: SELFY learns motion on procedurally generated clips, on any machine.

  python main.py --config=configs/default.py --workdir=runs/default

Every class differs from its time-reversed twin only in the direction of motion, so
appearance alone cannot solve it. The default is a TSN ResNet-18 (no temporal shift) whose only
access to motion is one SELFY block. Variants by override:
  --config.model.selfy_stages="()"                                      TSN, appearance only
  --config.model.selfy_stages="()" --config.model.temporal_shift=True   TSM
  --config.model.temporal_shift=True                                    TSM + SELFY
  --config.model.selfy.window="(1,9,9)"                                 other SELFY windows
  --config.dataset.motion_scale=3.0                                     the fast-motion variant
  --config.dataset.classes="(0,1,2,3,4,5,6,7,8,9,10,11)" --config.dataset.num_classes=12
                                                     all twelve motions (needs ~3x the steps)
The ablation table of the README: python -m benchmarks.synthetic_ablation
"""
import ml_collections

from configs import common


def get_config(arg=None):
  del arg
  config = ml_collections.ConfigDict()
  config.seed = 0  # root of every random key (init, dropout, data)
  config.dataset = ml_collections.ConfigDict(dict(
      name="synthetic",  # dataset: "synthetic" | "ssv1" | "ssv2" | "diving48" | "finegym"
      num_classes=6,  # classes of the dataset
      data_dir="",  # unused by the synthetic dataset
      num_eval=384,  # synthetic: validation clips
      motion_scale=1.0,  # synthetic: speed multiplier; 3.0 is the fast-motion variant
      # synthetic: motions used, indices into input_pipeline.synthetic.CLASSES. The default six
      # (right/left, down/up, approaching/receding) train to > 90% within 10 CPU minutes; all twelve
      # (adding rotations, out-and-back and speed) need about 3x the steps.
      classes=(0, 1, 2, 3, 4, 5),
  ))
  config.input = ml_collections.ConfigDict(dict(
      num_frames=8,  # frames per clip
      image_size=64,  # side of the square frames, pixels
  ))
  config.model = common.model_config(depth=18)
  config.model.width = 16
  config.model.temporal_shift = False
  # After stage 1: at 64x64 the STSS after stage 2 would be a 4x4 map, too coarse for motions of
  # a few pixels per frame; a (5, 5, 5) window covers them at stage 1 at a third of (5, 9, 9)'s cost.
  config.model.selfy_stages = (1,)
  config.model.selfy.window = (5, 5, 5)
  config.model.selfy.hidden = 32
  config.model.selfy.ext_channels = (4, 16, 32, 32)
  config.model.selfy.int_channels = (32, 32, 32, 32)
  config.model.dropout = 0.2
  config.optimizer = common.optimizer_config()
  config.optimizer.learning_rate = 0.2  # per 64 clips: 0.05 at batch 16
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 20
  config.label_smoothing = 0.0  # cross-entropy label smoothing
  config.mesh = ml_collections.ConfigDict(dict(model=1))  # devices on the 'model' mesh axis
  config.batch_size = 16  # global, in clips
  config.total_steps = 600  # optimiser steps
  config.eval_every_steps = 300  # steps between evaluations
  config.checkpoint_every_steps = 300  # steps between checkpoints
  config.log_every_steps = 10  # steps between progress and metrics updates
  config.keep_checkpoints = 2  # most recent checkpoints kept, besides the best
  config.init_from = ""  # model checkpoint directory to start from (python -m stss_jax.convert)
  return config
