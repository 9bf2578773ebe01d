"""SELFYNet: size against the official figures, initialisation, shapes, config errors."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import ssv1
from stss_jax import complexity
from stss_jax.models import build_model


def tiny_config(**model):
  config = ssv1.get_config()
  config.dataset.num_classes = 5
  config.input.image_size = 32
  config.input.num_frames = 4
  config.model.depth = 18
  config.model.width = 8
  config.model.selfy.hidden = 8
  config.model.selfy.window = (3, 3, 3)
  config.model.update(model)
  return config


@pytest.mark.slow  # the full-size official model
def test_official_ssv1_model_size_matches_the_authors():
  # Figures measured on the authors' code (docs/conventions.md).
  result = complexity.measure(ssv1.get_config())
  assert result.params == 24_830_842
  assert abs(result.conv_macs - 35.91e9) / 35.91e9 < 0.01
  config = ssv1.get_config()
  config.model.selfy_stages = ()
  without = complexity.measure(config)
  assert without.params == 23_864_558
  assert abs(without.conv_macs + without.matmul_macs - 32.70e9) / 32.70e9 < 0.01
  assert without.stss_macs == 0
  # (5, 9, 9) window x 128 channels at 14x14 for 8 frames.
  assert result.stss_macs == 8 * 14 * 14 * 405 * 128


def test_initialisation_follows_the_official_model():
  # The official ResNet-50 layout at a quarter of the width: the same rules, and enough draws in
  # every tensor to test their spread.
  config = ssv1.get_config()
  config.model.width = 16
  model = build_model(config)
  base = model.base_model
  for block in [*base.layer1, *base.layer2, *base.layer3, *base.layer4]:
    assert not np.any(block.bn3.scale[...])
    np.testing.assert_array_equal(block.bn1.scale[...], 1.0)
  assert not np.any(base.selfy.stss_integration.upsample_bn.scale[...])
  np.testing.assert_array_equal(base.selfy.stss_extraction.conv2.bn.scale[...], 1.0)
  # kaiming normal, fan_out: std sqrt(2 / (out * kh * kw)).
  kernel = np.asarray(base.layer3[0].conv2.kernel[...])  # (3, 3, 64, 64)
  assert kernel.shape == (3, 3, 64, 64)
  assert abs(kernel.std() / np.sqrt(2 / (64 * 9)) - 1) < 0.02
  # xavier uniform head, zero bias.
  head = np.asarray(model.new_fc.kernel[...])  # (512, 174)
  bound = np.sqrt(6 / (512 + 174))
  assert head.shape == (512, 174)
  assert head.max() <= bound and head.min() >= -bound and head.max() > 0.9 * bound
  assert not np.any(model.new_fc.bias[...])


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_every_depth_builds_with_the_torchvision_layout(depth):
  counts = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
  config = tiny_config(depth=depth, selfy_stages=())
  model = nnx.eval_shape(lambda: build_model(config))
  assert tuple(len(getattr(model.base_model, f"layer{s}")) for s in range(1, 5)) == counts


@pytest.mark.slow  # a ResNet-50 with two SELFY blocks, forward and backward
@pytest.mark.parametrize("extractor", ["conv", "soft_argmax", "mlp"])
def test_forward_and_backward_in_train_mode(extractor):
  config = tiny_config(selfy_stages=(2, 3))
  config.model.selfy.extractor = extractor
  model = build_model(config)
  clips = jax.random.normal(jax.random.key(0), (2, 4, 32, 32, 3))
  labels = jnp.array([1, 3])

  def loss_fn(model):
    logits = model(clips, rngs=nnx.Rngs(dropout=0))
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1)), logits

  (loss, logits), grads = nnx.jit(nnx.value_and_grad(loss_fn, has_aux=True))(model)
  assert logits.shape == (2, 5) and logits.dtype == jnp.float32
  assert np.isfinite(float(loss))
  assert float(jnp.abs(grads.new_fc.kernel[...]).sum()) > 0
  assert hasattr(model.base_model, "selfy") and hasattr(model.base_model, "selfy_after_layer3")


def test_bfloat16_compute_keeps_float32_params_and_logits():
  model = build_model(tiny_config(dtype="bfloat16"))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  model.eval()
  logits = nnx.jit(lambda m, x: m(x))(model, jnp.ones((1, 4, 32, 32, 3)))
  assert logits.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize(
  "key,value,message",
  [
    ("depth", 42, "config.model.depth = 42"),
    ("dtype", "float16", "config.model.dtype"),
    ("selfy_stages", (5,), "config.model.selfy_stages"),
    ("dropout", 1.5, "config.model.dropout"),
  ],
)
def test_bad_model_config_names_the_key(key, value, message):
  config = tiny_config()
  config.model[key] = value
  with pytest.raises(ValueError, match=message.replace(".", r"\.")):
    build_model(config)


def test_bad_selfy_window_names_the_key():
  config = tiny_config()
  config.model.selfy.window = (5, 8, 8)
  with pytest.raises(ValueError, match="config.model.*window"):
    build_model(config)


def test_model_directories_record_temporal_offsets_only_when_chosen(tmp_path):
  """A centred window's architecture is what it was before offsets could be chosen (so older
  model directories load); a chosen set is recorded and a mismatch is refused."""
  import json

  from configs import default
  from stss_jax import model_dir
  from stss_jax.models import build_model

  centred = default.get_config("tiny")
  assert "temporal_offsets" not in model_dir.architecture(centred)["model"]["selfy"]
  forward = default.get_config("tiny")
  forward.model.selfy.temporal_offsets = (1,)
  model_dir.save(tmp_path / "forward", build_model(forward), forward)
  saved = json.loads((tmp_path / "forward" / model_dir.CONFIG_FILE).read_text())
  assert saved["model"]["selfy"]["temporal_offsets"] == [1]
  model_dir.restore(tmp_path / "forward", build_model(forward), forward)
  with pytest.raises(
    ValueError, match=r"temporal_offsets is \[1\] in the checkpoint, None in the config"
  ):
    model_dir.restore(tmp_path / "forward", build_model(centred), centred)


@pytest.mark.parametrize("zero_init", [True, False])
def test_zero_init_residual_starts_every_block_as_the_identity(zero_init):
  """With zero-initialised residual BNs a TSM network starts as a TSN, so reversing time leaves
  its output unchanged; with them at scale 1 the shifted channels reach the output at once."""
  config = tiny_config(temporal_shift=True, selfy_stages=())
  config.model.zero_init_residual = zero_init
  model = build_model(config)
  model.eval()
  clips = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 32, 32, 3)), jnp.float32)
  change = float(jnp.abs(model(clips) - model(clips[:, ::-1])).max())
  scales = [
    bn.scale.value
    for path, bn in nnx.iter_graph(model)
    if path and path[-1] in ("bn2", "bn3") and isinstance(bn, nnx.BatchNorm)
  ]
  assert scales and all(bool(jnp.all(s == (0.0 if zero_init else 1.0))) for s in scales)
  assert (change < 1e-5) if zero_init else (change > 1e-3)


def primitive_counts(jaxpr) -> collections.Counter:
  """How many equations apply each primitive in a jaxpr, inner jaxprs (calls, remat, cond
  branches) included."""
  found = collections.Counter()
  for eqn in jaxpr.eqns:
    found[eqn.primitive.name] += 1
    for value in eqn.params.values():
      for sub in value if isinstance(value, (list, tuple)) else [value]:
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          found += primitive_counts(inner)
  return found


def primitive_names(jaxpr) -> set[str]:
  """Every primitive of a jaxpr, inner jaxprs (calls, remat, cond branches) included."""
  return set(primitive_counts(jaxpr))


def _count_ops(program: str) -> dict[str, int]:
  return {op: program.count(f"stablehlo.{op}(") for op in ("convolution", "reduce")}


def test_remat_recomputes_the_blocks_and_changes_no_loss_gradient_or_statistic():
  """config.model.remat: the backward recomputes each residual block's activations (remat_saves
  "nothing": its convolutions and BN statistics too, so the lowered step holds more of both;
  "bn_inputs": only elementwise work, so it holds exactly as many as without remat), and the loss,
  gradients and BN statistics stay those of the model without remat."""
  clips = jax.random.normal(jax.random.key(0), (2, 4, 32, 32, 3))
  labels = jnp.array([1, 3])

  def loss_fn(model):
    logits = model(clips, rngs=nnx.Rngs(dropout=0))
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

  results = {}
  for remat, saves in ((False, "nothing"), (True, "nothing"), (True, "bn_inputs")):
    model = build_model(tiny_config(remat=remat, remat_saves=saves))
    model.train()
    graph, state = nnx.split(model)

    def step(state_):
      model_ = nnx.merge(graph, state_)  # noqa: B023
      loss, grads = nnx.value_and_grad(loss_fn)(model_)
      return loss, grads, nnx.state(model_, nnx.BatchStat)

    programs = primitive_names(jax.make_jaxpr(step)(state).jaxpr)
    lowered = jax.jit(step).lower(state)
    loss, grads, statistics = lowered.compile()(state)
    results[remat, saves] = (
      programs,
      float(loss),
      jax.tree.leaves(grads) + jax.tree.leaves(statistics),
      _count_ops(lowered.as_text()),
    )
  without = results[False, "nothing"]
  for saves in ("nothing", "bn_inputs"):
    with_remat = results[True, saves]
    # jax.checkpoint's primitive: the backward recomputes the blocks inside it
    assert "remat2" in with_remat[0] and "remat2" not in without[0]
    if saves == "nothing":
      assert all(with_remat[3][op] > without[3][op] for op in ("convolution", "reduce")), saves
    else:
      assert with_remat[3] == without[3], saves
    assert with_remat[1] == pytest.approx(without[1], rel=1e-6)
    for a, b in zip(with_remat[2], without[2], strict=True):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stages, blocks", [((1,), 2), ((1, 2), 4), ((2, 4), 4), ((1, 2, 3, 4), 8)])
def test_remat_stages_rematerialise_the_blocks_of_those_stages_only(stages, blocks):
  """config.model.remat_stages: one checkpoint per residual block of the named stages (ResNet-18:
  two blocks a stage), none for the others."""
  model = build_model(tiny_config(remat=True, remat_stages=stages, selfy_stages=()))
  model.eval()
  graph, state = nnx.split(model)
  jaxpr = jax.make_jaxpr(lambda state_: nnx.merge(graph, state_)(jnp.zeros((1, 4, 32, 32, 3))))(
    state
  ).jaxpr
  assert primitive_counts(jaxpr)["remat2"] == blocks


@pytest.mark.parametrize("stages", [(), (0,), (5,), (1, 1)])
def test_bad_remat_stages_name_the_key(stages):
  with pytest.raises(
    ValueError, match=r"config\.model\.remat_stages = .*distinct stages among 1, 2, 3, 4"
  ):
    build_model(tiny_config(remat=True, remat_stages=stages))


def test_remat_stages_without_remat_is_refused_not_ignored():
  with pytest.raises(
    ValueError, match=r"remat_stages = \(1,\) takes effect only with config\.model\.remat = True"
  ):
    build_model(tiny_config(remat_stages=(1,)))


def test_an_unknown_remat_saves_names_the_key_and_the_choices():
  with pytest.raises(ValueError, match=r"config\.model\.remat_saves = 'convs'.*bn_inputs.*nothing"):
    build_model(tiny_config(remat=True, remat_saves="convs"))
