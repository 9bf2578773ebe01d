"""benchmarks.triton_ptx's first half, which needs only jax: the Triton IR of both kernels."""
from benchmarks.triton_ptx import triton_modules


def test_both_kernels_come_out_as_triton_ir_without_a_gpu():
  modules = triton_modules("pallas:order=l/parts=1", shape=(1, 4, 14, 14, 128))
  assert sorted(modules) == ["stss_windows", "stss_windows_grad"]
  for text in modules.values():
    assert text.startswith("module @") and text.rstrip().endswith("}")
    assert "tt.dot" in text and "tt.store" in text
    assert "#loc" not in text and "[unknown]" not in text  # locations stripped: Triton parses it alone
  # The forward stores the windows once; the one-part backward loads the cotangent twice per offset.
  assert modules["stss_windows"].count("tt.store") == 1
  assert modules["stss_windows_grad"].count("tt.load") > modules["stss_windows"].count("tt.load")


def test_aligned_kernels_come_out_without_locations_inside_their_reductions():
  """The aligned kernels' row sums are reductions whose block arguments carry source locations
  of their own; left in, Triton's parser stops there."""
  modules = triton_modules("pallas:kernels=aligned", shape=(1, 4, 14, 14, 128))
  assert sorted(modules) == ["stss_windows_aligned", "stss_windows_aligned_grad"]
  for text in modules.values():
    assert '"tt.reduce"' in text and "tt.dot" in text
    assert "#loc" not in text and "[unknown]" not in text
