"""Pure step functions: train_step(state, batch, rng) -> (state, metrics), eval_step."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

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


def make_train_step(graphs: ModelGraphs, tx: optax.GradientTransformation, schedule, label_smoothing: float):
  def train_step(state: TrainState, batch: dict, rng: jax.Array) -> tuple[TrainState, dict]:
    """One SGD step on a global batch {'clips': (N, T, H, W, 3), 'labels': (N,)}."""
    dropout_key = jax.random.fold_in(rng, state.step)

    def loss_fn(params, batch_stats):
      model = model_of(graphs, state.replace(params=params, batch_stats=batch_stats), train=True)
      logits = model(batch["clips"], rngs=nnx.Rngs(dropout=dropout_key))
      loss = jnp.mean(cross_entropy(logits, batch["labels"], label_smoothing))
      return loss, (logits, nnx.state(model, nnx.BatchStat))

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, state.batch_stats)
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
        "top1": jnp.mean(topk_correct(logits, batch["labels"], 1)),
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
    return model_of(graphs, state)(batch["clips"])

  return eval_step
