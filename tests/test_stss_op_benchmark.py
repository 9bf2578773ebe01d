"""The STSS benchmark's pallas settings: what a spec sets, and the one-line refusals."""

import pytest

from benchmarks.stss_op import l_major, parse_pallas
from stss_jax.ops.stss_pallas import Tiling


def test_pallas_spec_sets_the_named_settings_and_keeps_the_rest():
  assert parse_pallas("pallas") == parse_pallas("pallas:") == (Tiling(), False)
  assert parse_pallas("pallas:rows=2/fw=4/bw=2/parts=1/order=l") == (
    Tiling(rows=2, forward_warps=4, backward_warps=2, backward_parts=1),
    True,
  )
  assert parse_pallas("pallas:order=h/parts=2") == (Tiling(backward_parts=2), False)
  assert l_major("pallas:order=l") and not l_major("pallas:fw=8") and not l_major("gather")


@pytest.mark.parametrize(
  "spec,message",
  [
    ("pallas:warps=4", "unknown key 'warps'"),
    ("pallas:order=x", "order must be h or l, got 'x'"),
    ("pallas:fw=four", "fw must be a whole number, got 'four'"),
    ("pallas:parts=3", "backward_parts must be 1 or 2, got 3"),
    ("gather:fw=4", "not a pallas form"),
  ],
)
def test_bad_pallas_spec_names_the_key(spec, message):
  with pytest.raises(ValueError, match=message):
    parse_pallas(spec)


def test_trace_dir_gets_a_trace_of_each_form_and_dtype(tmp_path, monkeypatch):
  import jax.numpy as jnp
  import numpy as np

  from benchmarks import stss_op

  monkeypatch.setattr(stss_op, "WINDOW", (3, 3, 3))
  shape = (1, 3, 4, 4, 8)
  rng = np.random.default_rng(0)
  inputs = [jnp.asarray(rng.normal(size=shape), jnp.float32) for _ in range(2)]
  cotangents = [jnp.asarray(rng.normal(size=shape[:4] + (3, 3, 3)), jnp.float32) for _ in range(2)]
  rows = stss_op.jax_variants(inputs, cotangents, ["shift", "pallas:order=l"], str(tmp_path))
  assert sorted(rows) == ["jax pallas:order=l", "jax shift"]
  for folder in ("float32_shift", "float32_pallas_order_l"):
    assert list((tmp_path / folder).rglob("*.xplane.pb")), folder


def test_time_in_scan_runs_every_call_on_every_input_set():
  import jax
  import jax.numpy as jnp

  from benchmarks import stss_op

  seen = []

  def fn(x, y):
    jax.debug.callback(lambda a: seen.append(float(a)), x[0])
    return x * y, x + y

  sets = [(jnp.full((3,), float(i)), jnp.ones(3)) for i in range(3)]
  seconds = stss_op.time_in_scan(fn, sets, calls=5)
  assert 0 < seconds < 1
  runs = len(seen) // 5
  assert runs >= 1 and len(seen) == 5 * runs
  # Each run goes through the sets in turn: 0, 1, 2, 0, 1.
  assert seen[:5] == [0.0, 1.0, 2.0, 0.0, 1.0]


def test_clips_below_one_are_refused_before_anything_runs(capsys, monkeypatch):
  from benchmarks import stss_op

  monkeypatch.setattr(stss_op, "copy_bandwidth", lambda: 1e12)  # the 2 GiB copy, were it reached
  with pytest.raises(SystemExit):
    stss_op.main(["--clips=0", "--no-torch"])
  assert "--clips=0: use at least 1" in capsys.readouterr().err
