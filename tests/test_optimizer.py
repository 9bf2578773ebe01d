"""The optimisers against PyTorch's SGD configured as the official trainer does, and AdamW."""

import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch", reason="the reference optimiser is PyTorch's")

from configs import ssv1  # noqa: E402
from stss_jax.train import optimizer  # noqa: E402


def make_problem():
  rng = np.random.default_rng(0)
  params = {
    "conv": {"kernel": rng.normal(size=(3, 3, 4, 8))},
    "bn": {"scale": rng.normal(size=8), "bias": rng.normal(size=8)},
    "new_fc": {"kernel": rng.normal(size=(8, 5)), "bias": rng.normal(size=5)},
  }
  params = {k: {n: v.astype(np.float32) for n, v in d.items()} for k, d in params.items()}
  grads = [
    {
      k: {n: rng.normal(size=v.shape).astype(np.float32) * scale for n, v in d.items()}
      for k, d in params.items()
    }
    for scale in (1, 30, 1, 1, 1, 1, 50, 1)
  ]  # two steps clip
  return params, grads


def run_ours(config, params, grads):
  tx = optimizer.build_optimizer(config)
  ours, state = params, tx.init(params)
  for g in grads:
    updates, state = tx.update(g, state, ours)
    ours = optax.apply_updates(ours, updates)
  return ours


def torch_groups(params):
  tensors = {
    (k, n): torch.tensor(v, requires_grad=True) for k, d in params.items() for n, v in d.items()
  }
  groups = [
    {"params": [tensors["conv", "kernel"]], "lr_mult": 1, "decay_mult": 1},
    {"params": [tensors["bn", "scale"], tensors["bn", "bias"]], "lr_mult": 1, "decay_mult": 0},
    {"params": [tensors["new_fc", "kernel"]], "lr_mult": 1, "decay_mult": 1},
    {"params": [tensors["new_fc", "bias"]], "lr_mult": 2, "decay_mult": 0},
  ]
  return tensors, groups


def run_torch(torch_optimizer, tensors, grads, lr_at, weight_decay):
  for step, g in enumerate(grads):
    for group in torch_optimizer.param_groups:  # the official adjust_learning_rate
      group["lr"] = lr_at(step) * group["lr_mult"]
      group["weight_decay"] = weight_decay * group["decay_mult"]
    for (k, n), t in tensors.items():
      t.grad = torch.tensor(g[k][n])
    torch.nn.utils.clip_grad_norm_(list(tensors.values()), 20)
    torch_optimizer.step()


def test_matches_torch_sgd_with_the_official_parameter_groups():
  config = ssv1.get_config()
  config.batch_size = 32  # lr scales linearly: 0.005
  config.total_steps = 10
  config.optimizer.decay_at = (0.5,)
  params, grads = make_problem()
  ours = run_ours(config, params, grads)
  tensors, groups = torch_groups(params)
  sgd = torch.optim.SGD(groups, lr=0.005, momentum=0.9, nesterov=True, weight_decay=5e-4)
  run_torch(sgd, tensors, grads, lambda step: 0.005 * (0.1 if step >= 5 else 1.0), 5e-4)
  for (k, n), t in tensors.items():
    np.testing.assert_allclose(
      np.asarray(ours[k][n]), t.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=f"{k}.{n}"
    )


def test_adamw_matches_torch_adamw_with_the_same_parameter_groups():
  config = ssv1.get_config()
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 2e-3  # per 64 clips: 1e-3 at batch 32
  config.optimizer.weight_decay = 0.05
  config.optimizer.momentum, config.optimizer.beta2, config.optimizer.eps = 0.8, 0.99, 1e-6
  config.batch_size = 32
  config.total_steps = 10
  config.optimizer.schedule = "cosine"
  params, grads = make_problem()
  ours = run_ours(config, params, grads)
  tensors, groups = torch_groups(params)
  adamw = torch.optim.AdamW(groups, lr=1e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)
  cosine = optimizer.learning_rate_schedule(config)
  assert (
    abs(float(cosine(5)) - 1e-3 * 0.5 * (1 + np.cos(np.pi * 5 / 10))) < 1e-9
  )  # the schedule itself, by hand
  run_torch(adamw, tensors, grads, lambda step: float(cosine(step)), 0.05)
  for (k, n), t in tensors.items():
    np.testing.assert_allclose(
      np.asarray(ours[k][n]), t.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=f"{k}.{n}"
    )
