"""The optimiser against PyTorch's SGD configured as the official trainer does."""
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch", reason="the reference optimiser is PyTorch's")

from configs import ssv1  # noqa: E402
from stss_jax.train import optimizer  # noqa: E402


def test_matches_torch_sgd_with_the_official_parameter_groups():
  config = ssv1.get_config()
  config.batch_size = 32  # lr scales linearly: 0.005
  config.total_steps = 10
  config.optimizer.decay_at = (0.5,)
  rng = np.random.default_rng(0)
  params = {
      "conv": {"kernel": rng.normal(size=(3, 3, 4, 8))},
      "bn": {"scale": rng.normal(size=8), "bias": rng.normal(size=8)},
      "new_fc": {"kernel": rng.normal(size=(8, 5)), "bias": rng.normal(size=5)},
  }
  params = {k: {n: v.astype(np.float32) for n, v in d.items()} for k, d in params.items()}
  grads = [{k: {n: rng.normal(size=v.shape).astype(np.float32) * scale for n, v in d.items()}
            for k, d in params.items()} for scale in (1, 30, 1, 1, 1, 1, 50, 1)]  # two steps clip

  tx = optimizer.build_optimizer(config)
  ours, state = params, tx.init(params)
  for g in grads:
    updates, state = tx.update(g, state, ours)
    ours = optax.apply_updates(ours, updates)

  tensors = {(k, n): torch.tensor(v, requires_grad=True) for k, d in params.items() for n, v in d.items()}
  groups = [
      {"params": [tensors["conv", "kernel"]], "lr_mult": 1, "decay_mult": 1},
      {"params": [tensors["bn", "scale"], tensors["bn", "bias"]], "lr_mult": 1, "decay_mult": 0},
      {"params": [tensors["new_fc", "kernel"]], "lr_mult": 1, "decay_mult": 1},
      {"params": [tensors["new_fc", "bias"]], "lr_mult": 2, "decay_mult": 0},
  ]
  sgd = torch.optim.SGD(groups, lr=0.005, momentum=0.9, nesterov=True, weight_decay=5e-4)
  for step, g in enumerate(grads):
    lr = 0.005 * (0.1 if step >= 5 else 1.0)
    for group in sgd.param_groups:  # the official adjust_learning_rate
      group["lr"] = lr * group["lr_mult"]
      group["weight_decay"] = 5e-4 * group["decay_mult"]
    for (k, n), t in tensors.items():
      t.grad = torch.tensor(g[k][n])
    torch.nn.utils.clip_grad_norm_(list(tensors.values()), 20)
    sgd.step()
  for (k, n), t in tensors.items():
    np.testing.assert_allclose(np.asarray(ours[k][n]), t.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=f"{k}.{n}")
