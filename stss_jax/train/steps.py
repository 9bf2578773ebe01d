"""Pure step functions: train_step(state, batch, rng) -> (state, metrics), eval_step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from input_pipeline.crop_resize import resize_crops, resize_regions
from input_pipeline.normalization import model_input
from stss_jax.train.state import ModelGraphs, TrainState, model_of


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy (N,) in float32, with optional label smoothing."""
  targets = jax.nn.one_hot(labels, logits.shape[-1])
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """(N,) 1.0 where the label is among the k highest logits."""
  k = min(k, logits.shape[-1])
  return jnp.any(jax.lax.top_k(logits, k)[1] == labels[:, None], axis=-1).astype(jnp.float32)


def micro_batches(batch: dict, count: int) -> dict:
  """(N, ...) -> (count, N // count, ...): micro-batch k holds examples k, k + count, k + 2 count,
  ...

  Strided rather than contiguous, so that when the global batch is split over devices in
  contiguous blocks every device holds an equal share of every micro-batch.
  """

  def split(x):
    return jnp.swapaxes(x.reshape(x.shape[0] // count, count, *x.shape[1:]), 0, 1)

  return jax.tree.map(split, batch)


def training_clips(
  batch: dict, image_size: int | None, window_hw: tuple[int, int] | None = None
) -> jax.Array:
  """The batch's clips as the model takes them. Windows with their 'crop_boxes' and 'flips' (a
  video source with resize_on_accelerator) are cropped, resized to image_size and flipped first;
  frame regions with their 'first_resize' are resized to window_hw windows before that."""
  clips = batch["clips"]
  if "first_resize" in batch:
    if window_hw is None:
      raise ValueError(
        "the batch holds frame regions ('first_resize'): make_train_step needs window_hw"
      )
    clips = resize_regions(clips, batch["first_resize"], window_hw)
  if "crop_boxes" in batch:
    if image_size is None:
      raise ValueError(
        "the batch holds crop windows ('crop_boxes'): make_train_step needs image_size"
      )
    clips = resize_crops(clips, batch["crop_boxes"], image_size, batch.get("flips"))
  return model_input(clips)


def make_train_step(
  graphs: ModelGraphs,
  tx: optax.GradientTransformation,
  schedule,
  label_smoothing: float,
  grad_accum_steps: int = 1,
  image_size: int | None = None,
  window_hw: tuple[int, int] | None = None,
):
  """grad_accum_steps K > 1: the global batch runs as K micro-batches (micro_batches) through
  forward and backward in turn, and their mean gradient makes one update. BatchNorm normalises
  each micro-batch with its own statistics and updates its running statistics once per
  micro-batch, as PyTorch does when gradients are accumulated over K backward passes.
  image_size: the side that training crops are resized to, window_hw the windows that frame
  regions are resized to first (training_clips; config.input.resize_on_accelerator)."""

  def train_step(state: TrainState, batch: dict, rng: jax.Array) -> tuple[TrainState, dict]:
    """One SGD step on a global batch {'clips': (N, T, H, W, 3), 'labels': (N,)}, and 'crop_boxes'
    (N, 4) and 'flips' (N,) when the clips are crop windows; uint8 clips are resized (crops) and
    normalised here, on the devices."""
    dropout_key = jax.random.fold_in(rng, state.step)

    def loss_fn(params, batch_stats, micro, key):
      model = model_of(graphs, state.replace(params=params, batch_stats=batch_stats), train=True)
      logits = model(training_clips(micro, image_size, window_hw), rngs=nnx.Rngs(dropout=key))
      loss = jnp.mean(cross_entropy(logits, micro["labels"], label_smoothing))
      top1 = jnp.mean(topk_correct(logits, micro["labels"], 1))
      return loss, (top1, nnx.state(model, nnx.BatchStat))

    gradients = jax.value_and_grad(loss_fn, has_aux=True)
    if grad_accum_steps == 1:
      (loss, (top1, batch_stats)), grads = gradients(
        state.params, state.batch_stats, batch, dropout_key
      )
    else:

      def accumulate(carry, micro_and_index):
        grad_sum, batch_stats = carry
        micro, index = micro_and_index
        (loss, (top1, batch_stats)), grads = gradients(
          state.params, batch_stats, micro, jax.random.fold_in(dropout_key, index)
        )
        return (jax.tree.map(jnp.add, grad_sum, grads), batch_stats), (loss, top1)

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      (grad_sum, batch_stats), (losses, top1s) = jax.lax.scan(
        accumulate,
        (zeros, state.batch_stats),
        (micro_batches(batch, grad_accum_steps), jnp.arange(grad_accum_steps)),
      )
      grads = jax.tree.map(lambda g: g / grad_accum_steps, grad_sum)
      loss, top1 = jnp.mean(losses), jnp.mean(top1s)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
      step=state.step + 1,
      params=params,
      batch_stats=batch_stats,
      opt_state=opt_state,
    )
    metrics = {
      "loss": loss,
      "top1": top1,
      "grad_norm": optax.global_norm(grads),
      "lr": schedule(state.step),
      # 0 once an update overflowed: the loop then stops before saving that state.
      "params_finite": jnp.isfinite(optax.global_norm(params)).astype(jnp.float32),
    }
    return new_state, metrics

  return train_step


def make_eval_step(graphs: ModelGraphs):
  def eval_step(state: TrainState, batch: dict) -> jax.Array:
    """Eval-mode logits (N, classes) float32 for a global batch."""
    return model_of(graphs, state)(model_input(batch["clips"]))

  return eval_step
