"""The optimiser of the official recipe, built from config.optimizer.

SGD with Nesterov momentum (or AdamW, config.optimizer.name); weight decay on conv and linear
kernels only; the head bias at a multiple of the learning rate; global-norm clipping; step, cosine
or constant schedule with optional linear warmup. The base learning rate is given per
`base_batch_size` clips and scaled
linearly to the configured batch size.
"""

from __future__ import annotations

import jax
import optax

SCHEDULES = ("step", "cosine", "constant")


def learning_rate_schedule(config) -> optax.Schedule:
  opt = config.optimizer
  peak = opt.learning_rate * config.batch_size / opt.base_batch_size
  total, warmup = config.total_steps, opt.warmup_steps
  if opt.schedule == "step":
    boundaries = {int(f * total): opt.decay_factor for f in opt.decay_at}
    main = optax.piecewise_constant_schedule(
      peak, {b - warmup: s for b, s in boundaries.items() if b > warmup}
    )
  elif opt.schedule == "cosine":
    main = optax.cosine_decay_schedule(peak, max(1, total - warmup))
  elif opt.schedule == "constant":
    main = optax.constant_schedule(peak)
  else:
    raise ValueError(f"config.optimizer.schedule = {opt.schedule!r}: use one of {SCHEDULES}")
  if warmup:
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])
  return main


def _path_names(path) -> list[str]:
  return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def decay_mask(params):
  """True for conv and linear kernels: no weight decay on biases and BN parameters."""
  return jax.tree_util.tree_map_with_path(lambda p, _: _path_names(p)[-1] == "kernel", params)


def head_bias_mask(params):
  return jax.tree_util.tree_map_with_path(
    lambda p, _: _path_names(p)[-2:] == ["new_fc", "bias"], params
  )


OPTIMIZERS = ("sgd", "adamw")


def build_optimizer(config) -> optax.GradientTransformation:
  """The update rule; its learning rate at step s is learning_rate_schedule(config)(s)."""
  opt = config.optimizer
  if opt.name not in OPTIMIZERS:
    raise ValueError(
      f"config.optimizer.name = {opt.name!r}: use one of {OPTIMIZERS} (sgd is the official recipe)"
    )
  for key in ("learning_rate", "base_batch_size", "grad_clip_norm"):
    if not opt[key] > 0:
      raise ValueError(f"config.optimizer.{key} = {opt[key]!r} must be > 0")
  if opt.weight_decay < 0:
    raise ValueError(f"config.optimizer.weight_decay = {opt.weight_decay!r} must be >= 0")
  if opt.name == "sgd":
    # L2 weight decay added to the gradient before momentum, as torch.optim.SGD
    direction = [
      optax.add_decayed_weights(opt.weight_decay, mask=decay_mask),
      optax.trace(decay=opt.momentum, nesterov=opt.nesterov),
    ]
  else:
    if not (0 <= opt.momentum < 1 and 0 <= opt.beta2 < 1 and opt.eps > 0):
      raise ValueError(
        f"config.optimizer: adamw needs 0 <= momentum (beta1) < 1, 0 <= beta2 < 1 and eps > 0; got "
        f"{opt.momentum}, {opt.beta2}, {opt.eps}"
      )
    # decoupled weight decay, scaled by the learning rate, as torch.optim.AdamW
    direction = [
      optax.scale_by_adam(b1=opt.momentum, b2=opt.beta2, eps=opt.eps),
      optax.add_decayed_weights(opt.weight_decay, mask=decay_mask),
    ]
  return optax.chain(
    optax.clip_by_global_norm(opt.grad_clip_norm),
    *direction,
    optax.scale_by_learning_rate(learning_rate_schedule(config)),
    optax.masked(optax.scale(opt.head_bias_lr_mult), head_bias_mask),
  )
