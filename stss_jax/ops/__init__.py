"""Parameter-free operations: the STSS transform and the temporal shift."""

from stss_jax.ops.stss import IMPLEMENTATIONS as stss_implementations
from stss_jax.ops.stss import l2_normalize, stss
from stss_jax.ops.temporal_shift import temporal_shift

__all__ = ["l2_normalize", "stss", "stss_implementations", "temporal_shift"]
