"""Pieces shared by the experiment configs. Every key is documented here, once."""

import ml_collections


def selfy_config() -> ml_collections.ConfigDict:
  """The official SELFY block (Kwon et al.): window (5, 9, 9), 128 hidden channels."""
  return ml_collections.ConfigDict(
    dict(
      window=(5, 9, 9),  # (L, U, V) odd sizes: frames, height and width of the neighbourhood
      # frames compared, as offsets from the query's frame, e.g. (1,) forward only or (-1, 1);
      # () is the centred window of L frames, -(L//2)..L//2 (the official model); L is then ignored
      temporal_offsets=(),
      hidden=128,  # channels of the features the STSS is computed on
      ext_channels=(4, 16, 64, 64),  # extraction conv widths; the last is the motion feature size
      int_channels=(64, 64, 64, 64),  # integration conv widths; the last is the fused width
      extractor="conv",  # "conv" (official) | "soft_argmax" | "mlp": the paper's three extractors
      temperature=0.01,  # softmax temperature of the soft_argmax extractor (similarity units)
    )
  )


def model_config(depth: int = 50) -> ml_collections.ConfigDict:
  """The official SELFYNet: TSM-ResNet with one SELFY block after stage 2."""
  return ml_collections.ConfigDict(
    dict(
      depth=depth,  # ResNet depth: 18, 34, 50 or 101
      width=64,  # channels of the stem; stages use width * 2**(stage - 1) (* 4 in bottlenecks)
      temporal_shift=True,  # TSM shift on every residual branch; False gives a TSN backbone
      shift_div=8,  # 1/fraction of channels shifted each way in time
      selfy_stages=(2,),  # stages (1-4) followed by a SELFY block; () for none
      selfy=selfy_config(),
      dropout=0.5,  # dropout rate before the linear head
      # every residual branch's last BN starts at zero scale (official); False starts it at 1
      zero_init_residual=True,
      dtype="float32",  # compute dtype: "float32" or "bfloat16" (params stay float32)
      # recompute each residual block's activations in the backward instead of keeping them: less
      # memory for large batches or 16 frames, more compute (benchmarks/results/gpu.md gives both)
      remat=False,
      # what a rematerialised block keeps: "nothing" but its input, or also "bn_inputs" (its
      # convolutions' outputs), so that only its BNs, ReLUs, shifts and additions are recomputed
      remat_saves="nothing",
      # the stages (1-4) whose residual blocks remat recomputes; stage 1's blocks work on the
      # largest
      # maps: (1,) frees a third of what all four free for a third of the extra step time (gpu.md)
      remat_stages=(1, 2, 3, 4),
    )
  )


def optimizer_config() -> ml_collections.ConfigDict:
  """The official recipe: SGD Nesterov, lr 0.01 per 64 clips, x0.1 at 60% and 80% of training."""
  return ml_collections.ConfigDict(
    dict(
      # "sgd" (official: momentum, L2 decay) | "adamw" (decoupled decay, as torch.optim.AdamW)
      name="sgd",
      learning_rate=0.01,  # per base_batch_size clips; scaled linearly to batch_size
      base_batch_size=64,  # clips the learning_rate is given for
      momentum=0.9,  # sgd: momentum; adamw: beta1
      nesterov=True,  # sgd only
      beta2=0.999,  # adamw only
      eps=1e-8,  # adamw only
      weight_decay=5e-4,  # on conv and linear kernels only
      head_bias_lr_mult=2.0,  # learning-rate multiple of the linear head's bias
      grad_clip_norm=20.0,  # global gradient-norm clipping threshold
      schedule="step",  # "step" | "cosine" | "constant"
      decay_at=(0.6, 0.8),  # step schedule: fractions of total_steps where lr is multiplied
      decay_factor=0.1,  # step schedule: the multiplier at each of decay_at
      warmup_steps=0,  # linear warmup from 0, in steps
    )
  )


def base_config() -> ml_collections.ConfigDict:
  """Every key of an experiment, documented once, at the official recipe's values.

  The dataset and schedule keys are filled in by video_config (the real datasets) and by
  default.py (the synthetic demo), which change only what differs.
  """
  config = ml_collections.ConfigDict()
  config.seed = 0  # root of every random key (init, dropout, data order)
  config.dataset = ml_collections.ConfigDict(
    dict(
      name="",  # "synthetic" | "list" | "ssv1" | "ssv2" | "diving48" | "finegym"
      num_classes=0,  # classes in the label file
      # a TFDS data dir holding the built dataset (python -m input_pipeline.prepare), or the dataset
      # in its official layout (docs/datasets.md); "" is the default TFDS data dir,
      # ~/tensorflow_datasets
      data_dir="",
      tfds_name="",  # which TFDS build, "name[/config][:version]"; "" picks the dataset's one build
      train_list="",  # "list" and "finegym": training list file, relative to data_dir
      eval_list="",  # "list" and "finegym": evaluation list file, relative to data_dir
      # "list": optional file of class names, one a line, relative to data_dir
      class_names="",
      # "list": prefix removed from listed paths (the authors' lists: "/Dataset/SSV1/")
      strip_prefix="",
      frame_template="{:05d}.jpg",  # frame file names in frame folders, numbered from 1
      no_flip_labels=(),  # classes never flipped in training (their meaning has a direction)
      num_eval=384,  # "synthetic": validation clips
      motion_scale=1.0,  # "synthetic": speed multiplier; 3.0 is the fast-motion variant
      # "synthetic": the motions used, indices into input_pipeline.synthetic.CLASSES
      classes=(0, 1, 2, 3, 4, 5),
    )
  )
  config.input = ml_collections.ConfigDict(
    dict(
      num_frames=8,  # TSN segments per clip, one frame each
      image_size=224,  # side of the square crop fed to the model, pixels
      # every frame is first resized to (height, width), pixels
      resize_hw=(240, 320),
      dense_sampling=False,  # TSM dense sampling (64-frame span) instead of TSN segments
      # "multi_scale" (official: scale set x 13-point grid) | "random_resized"
      train_crop="multi_scale",
      randaugment_ops=0,  # RandAugment operations per training clip; 0 turns it off
      randaugment_magnitude=9.0,  # RandAugment magnitude M, 0..10
      # video sources: a training clip's resizes (raw JPEG frames: both; a TFDS build: crop ->
      # image_size) and its flip run in the train step on the accelerator instead of on the CPU
      # (more clips per core for a little step time: benchmarks.input_pipeline and
      # benchmarks.crop_resize, docs/performance.md): for when the CPU cores cannot feed the
      # accelerator; needs randaugment_ops = 0
      resize_on_accelerator=False,
      eval_clips=1,  # multi-view testing: clips per video (softmax averaged over views)
      eval_crops=1,  # multi-view testing: 1 centre crop or 3 crops along the longer side
    )
  )
  config.eval = ml_collections.ConfigDict(
    dict(
      # --mode=eval only: corrupt the evaluation clips (input_pipeline/corruptions.py), one of
      # occlusion, moving_occlusion, motion_blur, dropped_frames, gaussian_noise; "" for none
      corruption="",
      severity=3,  # 1 (mild) .. 5 (strong)
    )
  )
  config.model = model_config(depth=50)
  config.optimizer = optimizer_config()
  config.label_smoothing = 0.0  # cross-entropy label smoothing
  config.batch_size = 64  # global, in clips
  # micro-batches per update: the global batch runs as K forward/backward passes of batch_size / K
  # clips and their mean gradient makes one update (for GPUs too small for batch_size at once);
  # BatchNorm sees each micro-batch separately (README: Small GPUs)
  config.grad_accum_steps = 1
  config.total_steps = 1  # optimiser steps
  config.eval_every_steps = (
    1  # steps between evaluations (and the last step); each evaluates a saved checkpoint
  )
  config.checkpoint_every_steps = 1  # steps between checkpoints, besides those of the evaluations
  config.checkpoint_every_minutes = (
    30.0  # also checkpoint when this much time passed (0: off); bounds what a preemption loses
  )
  config.log_every_steps = 50  # steps between progress and metrics updates
  config.keep_checkpoints = 3  # most recent checkpoints kept, besides the best evaluated one
  config.init_from = ""  # model directory to start from (python -m stss_jax.convert, WORKDIR/model)
  return config


def video_config(
  name: str,
  num_classes: int,
  train_clips: int,
  num_frames: int = 8,
  epochs: int = 50,
  batch_size: int = 64,
) -> ml_collections.ConfigDict:
  """An official-recipe experiment on a video dataset: SELFYNet-R50, SGD, step decay."""
  config = base_config()
  config.dataset.name = name
  config.dataset.num_classes = num_classes
  config.input.num_frames = num_frames
  steps_per_epoch = train_clips // batch_size
  config.batch_size = batch_size
  config.total_steps = epochs * steps_per_epoch
  config.eval_every_steps = steps_per_epoch
  config.checkpoint_every_steps = steps_per_epoch
  return config
