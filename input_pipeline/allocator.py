"""glibc's malloc, told to keep the free top of its heaps instead of handing it back to the kernel.

A training clip from a TFDS build reads its video's whole record (about 1 MB of JPEG frames), and
TensorFlow decodes and copies its frames, in whichever tf.data thread ran it; all of it is freed a
few milliseconds later. With glibc's defaults those frees return the top of the threads' heaps to
the kernel, and the next clips fault the same pages in again, which costs system time comparable
to decoding their JPEG frames. M_TOP_PAD keeps TOP_PAD_MB at the top of every heap (any mallopt
also stops glibc from moving its mmap threshold as large blocks are freed), and those faults
mostly go (measured in benchmarks/results/input_pipeline.md; tests/test_allocator.py checks it).

A process-wide setting, made when a video source is built. It only exists on glibc (Linux);
elsewhere nothing changes. Setting the environment variable STSS_JAX_MALLOC_TOP_PAD_MB to 0 leaves
the allocator as it is; another value replaces TOP_PAD_MB.
"""

from __future__ import annotations

import ctypes
import os
import sys

from absl import logging

TOP_PAD_MB = 16  # per heap; the peak resident memory of the measured runs did not change
ENVIRONMENT = "STSS_JAX_MALLOC_TOP_PAD_MB"
M_TOP_PAD = -2  # glibc's malloc.h


def keep_heap_tops() -> int:
  """Sets glibc's M_TOP_PAD (TOP_PAD_MB, or $STSS_JAX_MALLOC_TOP_PAD_MB) for this process; returns
  the MB set, 0 when nothing was set (no glibc, or turned off)."""
  setting = os.environ.get(ENVIRONMENT, "")
  try:
    megabytes = int(setting) if setting else TOP_PAD_MB
  except ValueError:
    raise ValueError(
      f"{ENVIRONMENT}={setting!r}: give the megabytes to keep at the top of each heap as a whole "
      "number, or 0 to leave the allocator as it is"
    ) from None
  if megabytes <= 0 or not sys.platform.startswith("linux"):
    return 0
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):  # a libc without mallopt
    return 0
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  if not mallopt(M_TOP_PAD, megabytes << 20):
    return 0
  logging.log_first_n(
    logging.INFO,
    "malloc keeps %d MB at the top of each heap (%s=0 turns this off)",
    1,
    megabytes,
    ENVIRONMENT,
  )
  return megabytes
