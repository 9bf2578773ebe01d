"""What the pallas STSS kernels compile to, read on a machine without a GPU.

  pip install triton==3.9.0      # not a project dependency
  python -m benchmarks.triton_ptx [--implementations=pallas,pallas:order=l/parts=1] [--out=DIR]

Each kernel is lowered for a GPU through jax.export (Pallas prints the Triton IR it emits when its
pallas_call runs in debug mode) and compiled by the installed Triton for sm_90 to TTGIR and PTX.
Per kernel it prints the shared memory and counts the instructions in its PTX (the kernels' loops
are unrolled; the two-part backward holds both parts' code): global loads and stores by width,
shared-memory loads and stores, ldmatrix and mma. Scalar 2-byte global accesses
and shared-memory traffic are what Nsight Compute found the kernels bound by (L1/TEX, gpu.md
session 18). The device's jaxlib compiles with a Triton of its own, so its code can differ; in
session 18 the shared memory of both kernels here matched Nsight Compute's reading on the H200.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import io
import os
import re
import sys

import jax
import jax.numpy as jnp
from jax import export
from jax.experimental import pallas as pl

from benchmarks.stss_op import SHAPE, WINDOW, parse_pallas
from stss_jax.ops import stss_pallas
from stss_jax.ops.stss import resolve_temporal_offsets

INSTRUCTIONS = (
  r"(?:ld|st)\.(?:global|shared|local)[.a-z0-9]*|ldmatrix[.a-z0-9]*|mma\.sync|wgmma[.a-z0-9]*"
)


def triton_modules(implementation: str, shape=SHAPE) -> dict[str, str]:
  """{kernel name: Triton IR text} of the forward and backward kernels of a "pallas:..." form,
  lowered for a GPU on whatever machine this runs."""
  tiling, l_major = parse_pallas(implementation)
  offsets = resolve_temporal_offsets(WINDOW, None)

  def forward_and_gradient(features):
    windows, pullback = jax.vjp(
      lambda f: stss_pallas.stss_windows(f, offsets, WINDOW[1:], l_major, tiling), features
    )
    return windows, pullback(windows)[0]

  printed = io.StringIO()
  with _compiled_kernels(), contextlib.redirect_stdout(printed):
    export.export(
      jax.jit(forward_and_gradient),
      platforms=["cuda"],
      disabled_checks=[export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")],
    )(jax.ShapeDtypeStruct(shape, jnp.bfloat16))
  return _modules(printed.getvalue())


@contextlib.contextmanager
def _compiled_kernels():
  """stss_pallas lowers its compiled kernels (not the interpreted ones) with pallas_call's debug
  printing on."""
  interpret, pallas_call = stss_pallas._interpret, stss_pallas.pl.pallas_call
  stss_pallas._interpret = lambda: False
  stss_pallas.pl.pallas_call = functools.partial(pl.pallas_call, debug=True)
  try:
    yield
  finally:
    stss_pallas._interpret, stss_pallas.pl.pallas_call = interpret, pallas_call


def _modules(printed: str) -> dict[str, str]:
  """The `module @NAME {...}` blocks of the debug print, without their source locations."""
  modules, lines = {}, printed.splitlines()
  for start, line in enumerate(lines):
    match = re.match(r"module @(\w+) \{", line)
    if not match:
      continue
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("}"))
    body = [
      re.sub(r' "[^"]*"\(#loc\d+\)| \[unknown\]| loc\([^)]*\)', "", text)
      for text in lines[start : end + 1]
    ]
    modules[match.group(1)] = "\n".join(body) + "\n"
  return modules


def compile_for_sm90(name: str, module: str, warps: int, out: str) -> dict:
  """Compiles one Triton IR module with the installed Triton; writes NAME.ttir/.ttgir/.ptx under
  `out` and returns the shared memory bytes and the instruction counts of its PTX."""
  import triton
  from triton.backends.compiler import GPUTarget

  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, f"{name}.ttir")
  with open(path, "w") as f:
    f.write(module)
  kernel = triton.compile(
    path, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": 1}
  )
  for stage in ("ttgir", "ptx"):
    with open(os.path.join(out, f"{name}.{stage}"), "w") as f:
      f.write(kernel.asm[stage])
  counts = collections.Counter(re.findall(INSTRUCTIONS, kernel.asm["ptx"]))
  return {"shared bytes": kernel.metadata.shared, "instructions": dict(sorted(counts.items()))}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--implementations",
    default="pallas,pallas:order=l",
    help="comma-separated pallas forms, in benchmarks.stss_op's 'pallas:KEY=VALUE/...' spelling",
  )
  parser.add_argument("--clips", type=int, default=SHAPE[0])
  parser.add_argument(
    "--out", default="triton_ptx", help="folder for the .ttir, .ttgir and .ptx of each kernel"
  )
  args = parser.parse_args(argv)
  try:
    import triton  # noqa: F401
  except ImportError:
    parser.error("needs Triton: pip install triton==3.9.0 (not a project dependency)")
  shape = (args.clips, *SHAPE[1:])
  for implementation in args.implementations.split(","):
    tiling, _ = parse_pallas(implementation)
    warps = {"stss_windows": tiling.forward_warps, "stss_windows_grad": tiling.backward_warps}
    for name, module in triton_modules(implementation, shape).items():
      stem = f"{re.sub(r'[^A-Za-z0-9]+', '_', implementation)}_{name}"
      report = compile_for_sm90(stem, module, warps[name], args.out)
      print(
        f"{implementation} {name}: {report['shared bytes']} bytes shared; in the PTX "
        + ", ".join(f"{count} {op}" for op, count in report["instructions"].items()),
        flush=True,
      )
  return 0


if __name__ == "__main__":
  sys.exit(main())
