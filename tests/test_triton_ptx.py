"""benchmarks.triton_ptx's first half, which needs only jax: the Triton IR of both kernels."""

from benchmarks.triton_ptx import triton_modules


def test_both_kernels_come_out_as_triton_ir_without_a_gpu():
  modules = triton_modules("pallas:order=l/parts=1", shape=(1, 4, 14, 14, 128))
  assert sorted(modules) == ["stss_windows", "stss_windows_grad"]
  for text in modules.values():
    assert text.startswith("module @") and text.rstrip().endswith("}")
    assert "tt.dot" in text and "tt.store" in text
    assert (
      "#loc" not in text and "[unknown]" not in text
    )  # locations stripped: Triton parses it alone
  # The forward stores the windows once; the one-part backward loads the cotangent twice per offset.
  assert modules["stss_windows"].count("tt.store") == 1
  assert modules["stss_windows_grad"].count("tt.load") > modules["stss_windows"].count("tt.load")


def test_locations_inside_a_line_are_stripped_too():
  """A reduction's block arguments carry locations mid-line; left in, Triton's parser stops
  there."""
  from benchmarks.triton_ptx import _modules

  printed = "\n".join(
    [
      "module @kernel {",
      '  %0 = "tt.reduce"(%x) <{axis = 0 : i32}> ({',
      '  ^bb0(%a: f32 "reduce"(#loc7), %b: f32 "reduce"(#loc7)):',
      '    %1 = arith.addf %a, %b : f32 "add"(#loc8)',
      "  }) : (tensor<16xf32>) -> f32 loc(#loc9)",
      "}",
    ]
  )
  text = _modules(printed)["kernel"]
  assert "^bb0(%a: f32, %b: f32):" in text
  assert "#loc" not in text
