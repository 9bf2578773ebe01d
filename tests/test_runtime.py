"""The runtime policy: how the model's ops run, read when a model is traced, never in a
checkpoint."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import main
from configs import default
from stss_jax import complexity, model_dir, runtime
from stss_jax.convert import load_weights
from stss_jax.layers import SELFYBlock
from stss_jax.layers.conv_bn import aligned_cells
from stss_jax.models import build_model
from tests.test_models import primitive_names
from tests.test_selfy_block import official, to_clips  # noqa: F401  (official: a fixture)

TINY = "--config=configs/default.py:tiny"


@pytest.fixture(autouse=True)
def _default_policy_after():
  """Commands set the process's policy: later tests in this process get the default back."""
  yield
  runtime.set_policy(runtime.Policy())


def test_one_block_runs_under_every_policy_and_each_matches_the_official_output(official):  # noqa: F811
  """Built once with no form of its own; each policy changes the traced program, not the result."""
  block = SELFYBlock(64, 32, (5, 9, 9), (4, 16, 64, 64), (64, 64, 64, 64), rngs=nnx.Rngs(0))
  params = {k.removeprefix("param/"): v for k, v in official.items() if k.startswith("param/")}
  load_weights(block, params)
  block.eval()
  clips = jnp.asarray(to_clips(official["input"]))
  programs = {}
  for stss, extraction in (
    ("shift", "conv"),
    ("matmul", "dense"),
    ("gather", "dense"),
  ):
    with runtime.use(runtime.Policy(stss=stss, extraction=extraction)):
      output = jax.jit(lambda m, x: m(x))(block, clips)  # a fresh jit: traced under this policy
      programs[stss] = primitive_names(jax.make_jaxpr(lambda x: block(x))(clips).jaxpr)
    assert np.max(np.abs(np.asarray(output) - to_clips(official["output"]))) < 1e-4, (
      stss,
      extraction,
    )
  assert "gather" in programs["gather"] and "gather" not in programs["shift"]
  assert (
    "conv_general_dilated" in programs["shift"]
    and len({frozenset(p) for p in programs.values()}) == 3
  )
  assert runtime.current() == runtime.Policy()  # use() restores the policy it found


def test_row_alignment_pads_to_the_policy_multiple():
  assert aligned_cells(81, 4) == 84  # 324 entries -> 336, a multiple of the default 16
  with runtime.use(runtime.Policy(row_alignment=1)):
    assert aligned_cells(81, 4) == 81
  with runtime.use(runtime.Policy(row_alignment=64)):
    assert aligned_cells(81, 4) * 4 % 64 == 0 and aligned_cells(81, 4) == 96


@pytest.mark.parametrize(
  "kwargs, message",
  [
    ({"stss": "fast"}, "--stss_implementation='fast': use one of"),
    ({"extraction": "sparse"}, "--extraction_implementation='sparse': use one of"),
    ({"row_alignment": 0}, "--row_alignment=0: use a positive number"),
  ],
)
def test_bad_policy_values_are_refused(kwargs, message):
  with pytest.raises(ValueError, match=message):
    runtime.Policy(**kwargs)


def test_commands_take_the_policy_as_flags_and_no_model_directory_records_it(tmp_path, capsys):
  assert (
    complexity.main(
      ["complexity", TINY, "--stss_implementation=matmul", "--extraction_implementation=conv"]
    )
    == 0
  )
  assert runtime.current() == runtime.Policy(
    stss="matmul", extraction="conv"
  )  # in force for the command's work
  config = default.get_config("tiny")
  recorded = (
    model_dir.save(tmp_path / "model", build_model(config), config) / model_dir.CONFIG_FILE
  ).read_text()
  assert "implementation" not in recorded and "row_alignment" not in recorded, recorded
  capsys.readouterr()
  assert (
    main.main(
      [
        "main.py",
        TINY,
        f"--workdir={tmp_path / 'x'}",
        "--config.model.selfy.stss_implementation=shift",
      ]
    )
    == 2
  )
  assert capsys.readouterr().err.strip() == (
    "error: config.model.selfy.stss_implementation is no longer a config key: "
    "how the model runs is not part of the experiment; use "
    "--stss_implementation=..."
  )
  assert main.main(["main.py", TINY, f"--workdir={tmp_path / 'x'}", "--row_alignment=0"]) == 2
  assert "--row_alignment=0: use a positive number" in capsys.readouterr().err
  assert not (tmp_path / "x").exists()  # refused before any work


def test_selfy_remat_recomputes_the_similarities_and_changes_no_output_gradient_or_statistic():
  """Train mode, so that the extraction's BatchNorms update their statistics inside the recomputed
  part; the form without remat is the one checked against the official outputs and numpy (a
  smaller block here: the two forms are compared, not the numbers)."""
  clips = jax.random.normal(jax.random.key(0), (2, 4, 12, 12, 16))
  cotangent = jax.random.normal(jax.random.key(1), clips.shape)
  results = {}
  for remat in (False, True):
    block = SELFYBlock(16, 8, (3, 5, 5), (2, 4, 8, 8), (8, 8, 8, 8), rngs=nnx.Rngs(0))
    block.train()

    def loss(block, clips):
      return jnp.sum(block(clips) * cotangent)

    with runtime.use(runtime.Policy(stss="gather", extraction="dense", selfy_remat=remat)):
      graph, state = nnx.split(block)
      program = primitive_names(
        jax.make_jaxpr(lambda s, x: nnx.grad(loss, argnums=(0, 1))(nnx.merge(graph, s), x))(  # noqa: B023
          state, clips
        ).jaxpr
      )
      value, (grads, clip_grads) = nnx.jit(nnx.value_and_grad(loss, argnums=(0, 1)))(block, clips)
    results[remat] = (
      program,
      float(value),
      [clip_grads, *jax.tree.leaves(nnx.state(grads))],
      jax.tree.leaves(nnx.state(block, nnx.BatchStat)),
    )
  assert "remat2" in results[True][0] and "remat2" not in results[False][0]
  assert results[True][1] == pytest.approx(results[False][1], rel=1e-6)
  for a, b in zip(
    results[True][2] + results[True][3], results[False][2] + results[False][3], strict=True
  ):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
