"""Device time per XLA operation in a jax.profiler trace: where a step's milliseconds go.

  python -m benchmarks.trace_summary TRACE.xplane.pb [--top=40] [--module=SUBSTRING]

Reads the XSpace protobuf that `jax.profiler.trace` writes (…/plugins/profile/*/HOST.xplane.pb),
takes the kernels of the GPU planes and sums their durations per (XLA module, HLO op), so a
fusion that runs 10 times shows once with its total. Needs tensorflow for the protobuf classes
(run it on the CPU machine; the GPU machine only writes the trace).
"""

from __future__ import annotations

import argparse
import collections

from tensorflow.tsl.profiler.protobuf import xplane_pb2


def kernel_times(path: str) -> dict[tuple[str, str], list[float]]:
  """{(module, hlo op or kernel name): [durations in ms]} over every device plane of the trace."""
  space = xplane_pb2.XSpace()
  with open(path, "rb") as f:
    space.ParseFromString(f.read())
  times = collections.defaultdict(list)
  for plane in space.planes:
    if not plane.name.startswith("/device:GPU"):
      continue
    stat_names = {key: meta.name for key, meta in plane.stat_metadata.items()}
    for line in plane.lines:
      name = line.name.lower()
      # Streams are named by what ran on them, e.g. "Stream #14(Memset,Compute,MemcpyD2D)": kept
      # when kernels ran there, left out when only copies did.
      if "stream" not in name or ("memcpy" in name and "compute" not in name):
        continue
      for event in line.events:
        meta = plane.event_metadata[event.metadata_id]
        # String stats are either inline or a reference to the name of another stat metadata.
        stats = {
          stat_names.get(s.metadata_id, ""): s.str_value or stat_names.get(s.ref_value, "")
          for s in (*meta.stats, *event.stats)
        }
        op = stats.get("hlo_op") or meta.name
        module = stats.get("hlo_module") or "?"
        times[(str(module), str(op))].append(event.duration_ps / 1e9)
  return times


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("trace")
  parser.add_argument("--top", type=int, default=40)
  parser.add_argument("--module", default="", help="only modules whose name contains this")
  args = parser.parse_args()
  times = {k: v for k, v in kernel_times(args.trace).items() if args.module in k[0]}
  if not times:
    raise SystemExit(
      f"no GPU kernels found in {args.trace}"
      + (f" for module {args.module!r}" if args.module else "")
    )
  per_module = collections.defaultdict(float)
  for (module, _), durations in times.items():
    per_module[module] += sum(durations)
  print("| module | total ms |\n|---|---|")
  for module, total in sorted(per_module.items(), key=lambda kv: -kv[1]):
    print(f"| {module} | {total:.3f} |")
  print("\n| module | op | calls | total ms | mean ms |\n|---|---|---|---|---|")
  rows = sorted(times.items(), key=lambda kv: -sum(kv[1]))[: args.top]
  for (module, op), durations in rows:
    print(
      f"| {module} | {op} | {len(durations)} | {sum(durations):.3f} | "
      f"{sum(durations) / len(durations):.4f} |"
    )


if __name__ == "__main__":
  main()
