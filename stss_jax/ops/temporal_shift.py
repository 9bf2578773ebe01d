"""The temporal shift of TSM (Lin et al.), with zero padding at the clip ends."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def temporal_shift(clips: jax.Array, shift_div: int = 8) -> jax.Array:
  """Shifts two channel groups by one frame along time.

  Of C channels, the first C // shift_div take frame t+1's values, the next C // shift_div
  take frame t-1's values, and the rest stay; frames shifted in from outside the clip are 0.

  Args:
    clips: (batch, time, height, width, channels).
    shift_div: 1 / fraction of channels shifted each way (8 in TSM and SELFY).
  Returns:
    An array of the same shape and dtype.
  """
  if clips.ndim != 5:
    raise ValueError(
      "temporal_shift expects (batch, time, height, width, channels), "
      f"got rank {clips.ndim} shape {clips.shape}"
    )
  if shift_div < 2:
    raise ValueError(f"shift_div must be >= 2 (two shifted groups), got {shift_div}")
  fold = clips.shape[-1] // shift_div
  no_pad = (0, 0)
  from_next = jnp.pad(clips[:, 1:, ..., :fold], (no_pad, (0, 1), no_pad, no_pad, no_pad))
  from_prev = jnp.pad(clips[:, :-1, ..., fold : 2 * fold], (no_pad, (1, 0), no_pad, no_pad, no_pad))
  return jnp.concatenate([from_next, from_prev, clips[..., 2 * fold :]], axis=-1)
