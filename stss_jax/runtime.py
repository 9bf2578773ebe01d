"""How the model's ops run on this machine, as opposed to what the model is.

The STSS form (`stss_jax.ops.stss`: shift, matmul, gather, or auto, which picks by
backend), the extraction form (dense matrix products over each similarity plane, or convolutions),
the row alignment of the dense form and whether the SELFY block's similarities are recomputed in the
backward pass change speed and memory, never the function a model computes (up to
float rounding). They are one process-wide policy, read when a model is traced, so that a model
built once runs under any policy and a checkpoint never records one. Commands set it from
--stss_implementation, --extraction_implementation, --row_alignment and --selfy_remat
(stss_jax.cli); code sets
it with `with runtime.use(Policy(...)):` around the tracing (jit compiles under the policy in
force when it first traces).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

from absl import flags

from stss_jax.ops.stss import IMPLEMENTATIONS as STSS_FORMS  # the op says what each is

EXTRACTION_FORMS = ("dense", "conv")


@dataclasses.dataclass(frozen=True)
class Policy:
  stss: str = "auto"
  extraction: str = "dense"
  # Rows of the dense extraction's activations are padded to a multiple of this many entries:
  # unaligned rows (the 9x9x4 = 324 of the first extraction step) slow the matrix products that
  # read them; 16 (32 bytes in bf16) measured best of 1, 8, 16, 64 on an H100
  # (benchmarks/results/gpu.md).
  row_alignment: int = 16
  # The SELFY block's similarities and extraction recomputed in the backward pass instead of kept
  # (its (L, U, V) volume and every extraction activation): less memory for a little compute.
  selfy_remat: bool = False

  def __post_init__(self):
    if self.stss not in STSS_FORMS:
      raise ValueError(f"--stss_implementation={self.stss!r}: use one of {STSS_FORMS}")
    if self.extraction not in EXTRACTION_FORMS:
      raise ValueError(
        f"--extraction_implementation={self.extraction!r}: use one of {EXTRACTION_FORMS}"
      )
    if self.row_alignment < 1:
      raise ValueError(f"--row_alignment={self.row_alignment}: use a positive number of entries")


_current = Policy()


def current() -> Policy:
  """The policy in force."""
  return _current


def set_policy(policy: Policy) -> None:
  global _current
  _current = policy


@contextlib.contextmanager
def use(policy: Policy) -> Iterator[Policy]:
  """The policy in force inside the block."""
  previous = current()
  set_policy(policy)
  try:
    yield policy
  finally:
    set_policy(previous)


def define_flags(flag_values: flags.FlagValues) -> None:
  default = Policy()
  define = dict(flag_values=flag_values)
  flags.DEFINE_enum(
    "stss_implementation",
    default.stss,
    STSS_FORMS,
    "STSS form (execution only; auto: gather on GPUs, matmul on other accelerators, shift on CPU).",
    **define,
  )
  flags.DEFINE_enum(
    "extraction_implementation",
    default.extraction,
    EXTRACTION_FORMS,
    "STSS extraction form (execution only): dense matrix products or convolutions.",
    **define,
  )
  flags.DEFINE_integer(
    "row_alignment",
    default.row_alignment,
    "Entries a dense-extraction row is padded to a multiple of (execution only).",
    **define,
  )
  flags.DEFINE_boolean(
    "selfy_remat",
    default.selfy_remat,
    "Recompute the SELFY block's similarities and extraction in the backward pass instead of "
    "keeping them (execution only: less memory, a little more compute).",
    **define,
  )


def from_flags(flag_values: flags.FlagValues) -> Policy:
  return Policy(
    flag_values.stss_implementation,
    flag_values.extraction_implementation,
    flag_values.row_alignment,
    flag_values.selfy_remat,
  )
