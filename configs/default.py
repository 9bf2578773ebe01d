"""The embedded demo: SELFY learns motion on procedurally generated clips, on any machine.

  python main.py --config=configs/default.py --workdir=runs/default
  python main.py --config=configs/default.py:tiny --workdir=runs/tiny    # seconds: for tests

Every class differs from its time-reversed twin only in the direction of motion, so
appearance alone cannot solve it. The default is a TSN ResNet-18 (no temporal shift) whose only
access to motion is one SELFY block. Variants by override:
  TSN, appearance only:     --config.model.selfy_stages="()"
  TSM:                      --config.model.selfy_stages="()" --config.model.temporal_shift=True
  TSM + SELFY:              --config.model.temporal_shift=True
  other SELFY windows:      --config.model.selfy.window="(1,9,9)"
  forward-only STSS (any set of offsets):
                            --config.model.selfy.temporal_offsets="(1,)"
  the paper's other extractors (or mlp):
                            --config.model.selfy.extractor=soft_argmax
  correlation flow, next-frame correlation and its soft-argmax displacement (the MotionSqueeze
  family the paper compares with), in the same block:
      --config.model.selfy.temporal_offsets="(1,)" --config.model.selfy.extractor=soft_argmax
  the fast-motion variant:  --config.dataset.motion_scale=3.0
  all twelve motions (needs ~3x the steps):
      --config.dataset.classes="(0,1,2,3,4,5,6,7,8,9,10,11)" --config.dataset.num_classes=12
The ablation table of the README: python -m benchmarks.synthetic_ablation
"""

from configs import common

VARIANTS = ("", "tiny")


def get_config(arg=None):
  """`arg`: "" for the demo, "tiny" for a model and run small enough for unit tests."""
  variant = str(arg or "")
  if variant not in VARIANTS:
    raise ValueError(f"configs/default.py:{variant}: use one of {VARIANTS} (empty for the demo)")
  config = common.base_config()
  config.dataset.name = "synthetic"
  # The default six motions (right/left, down/up, approaching/receding) train to > 90% within 10
  # CPU minutes; all twelve (adding rotations, out-and-back and speed) need about 3x the steps.
  config.dataset.num_classes = 6
  config.input.image_size = 64
  # Videos given to predict are resized to the clips' own square size, so that a saved demo clip
  # reaches the model as the synthetic source drew it (the real datasets' 240x320 resize and
  # centre crop would show the model a zoomed-in patch).
  config.input.resize_hw = (64, 64)
  config.model = common.model_config(depth=18)
  config.model.width = 16
  config.model.temporal_shift = False
  # After stage 1: at 64x64 the STSS after stage 2 would be a 4x4 map, too coarse for motions of
  # a few pixels per frame; a (5, 5, 5) window covers them at stage 1 at a third of (5, 9, 9)'s
  # cost.
  config.model.selfy_stages = (1,)
  config.model.selfy.window = (5, 5, 5)
  config.model.selfy.hidden = 32
  config.model.selfy.ext_channels = (4, 16, 32, 32)
  config.model.selfy.int_channels = (32, 32, 32, 32)
  config.model.dropout = 0.2
  config.optimizer.learning_rate = 0.2  # per 64 clips: 0.05 at batch 16
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 20
  config.batch_size = 16
  config.total_steps = 600
  config.eval_every_steps = 300
  config.checkpoint_every_steps = 300
  config.log_every_steps = 10
  config.keep_checkpoints = 2
  if variant == "tiny":
    config.input.num_frames = 4
    config.input.image_size = 32
    config.input.resize_hw = (32, 32)
    config.model.width = 8
    config.model.selfy.window = (3, 5, 5)
    config.model.selfy.hidden = 8
    config.model.selfy.ext_channels = (2, 4, 8, 8)
    config.model.selfy.int_channels = (8, 8, 8, 8)
    config.dataset.num_eval = 12
    config.batch_size = 8
    config.total_steps = 4
    config.eval_every_steps = 2
    config.checkpoint_every_steps = 2
    config.log_every_steps = 1
  return config
