"""How much of a reward's per-image headroom a policy could learn: offline, from scored tables.

Input: for n images, the reward ``r[i, a]`` of each of the K top-k actions (scored on the same
state, :mod:`rlmix.headroom`), each image's observation features ``x[i]`` (what a policy sees),
and the batch each image came from. Random top-k earns ``mean_a r[i, a]`` in expectation; every
gain below is a policy's reward minus that, per image:

- **oracle**: ``max_a r[i, a]``, each image's best action (an upper bound no policy reaches
  without seeing the rewards);
- **best constant**: the one action with the highest mean reward on the fit half, scored on the
  test half; with a table of every image of a batch at that action (``everyone``) also the
  gain of a constant policy as a whole;
- **learnable**: a model fitted on the fit half to predict ``r[i, :] - mean_a r[i, a]`` from
  ``x[i]`` (ridge regression, and an MLP the size of the agent's policy), acting ``argmax``, scored
  on the test half: the headroom a policy can reach from its observation. The model (and its
  ridge penalty) is chosen on a validation part of the fit half.

Halves are split by batch (even batches fit, odd ones test), and every interval is a Student-t
interval over the test batches' mean gains, since the images of one batch share their lam,
partners and context.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlmix.stats import PairedDifference, mean_interval

RIDGE_PENALTIES = (0.1, 1.0, 10.0, 100.0, 1000.0)


@dataclass(frozen=True)
class Gains:
    """The gains over random top-k of one scored table (see the module docstring); each a
    :class:`rlmix.stats.PairedDifference` of the per-batch mean gain against 0."""

    oracle: PairedDifference
    best_constant: PairedDifference
    best_constant_everyone: PairedDifference
    learnable: PairedDifference
    learnable_linear: PairedDifference
    learnable_mlp: PairedDifference
    best_action: int
    best_action_everyone: int
    model: str  # the model chosen for ``learnable``: "linear" or "mlp"


def _by_batch(values: torch.Tensor, batch: torch.Tensor, confidence: float) -> PairedDifference:
    ids = torch.unique(batch)
    means = [float(values[batch == b].mean()) for b in ids]
    return mean_interval(means, confidence)


def _gain_of(rewards: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Per image: the reward of ``actions`` minus the random policy's expected reward."""
    return rewards.gather(1, actions[:, None])[:, 0] - rewards.mean(1)


class _Standardise:
    def __init__(self, x: torch.Tensor) -> None:
        self.mean, self.std = x.mean(0), x.std(0).clamp_min(1e-6)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def fit_ridge(x: torch.Tensor, y: torch.Tensor, penalty: float):
    """Ridge regression of ``y`` (n, K) on standardised ``x`` (n, d) with an intercept; returns
    a function from features to predictions."""
    norm = _Standardise(x)
    xs = torch.cat([norm(x), torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)
    eye = torch.eye(xs.shape[1], dtype=x.dtype)
    eye[-1, -1] = 0.0  # no penalty on the intercept
    w = torch.linalg.solve(xs.T @ xs + penalty * eye, xs.T @ y)
    return lambda z: torch.cat([norm(z), torch.ones(z.shape[0], 1, dtype=z.dtype)], 1) @ w


def fit_mlp(
    x: torch.Tensor,
    y: torch.Tensor,
    x_val: torch.Tensor,
    r_val: torch.Tensor,
    *,
    hidden: int = 64,
    epochs: int = 100,
    batch_size: int = 512,
    seed: int = 0,
):
    """A 2-hidden-layer tanh MLP (the agent's policy size) regressing ``y`` on ``x``, with the
    epoch of best validation gain on ``(x_val, r_val)``; returns a predictor."""
    gen = torch.Generator().manual_seed(seed)
    norm = _Standardise(x)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], hidden),
        torch.nn.Tanh(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.Tanh(),
        torch.nn.Linear(hidden, y.shape[1]),
    )
    torch.random.set_rng_state(torch_state)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4, foreach=True)
    xs, xv, y = norm(x).float(), norm(x_val).float(), y.float()
    best, best_state = -float("inf"), None
    for epoch in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for start in range(0, x.shape[0], batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(xs[idx]), y[idx]).backward()
            opt.step()
        if epoch % 10 == 9 or epoch == epochs - 1:
            with torch.no_grad():
                gain = float(_gain_of(r_val, net(xv).argmax(1)).mean())
            if gain > best:
                best, best_state = gain, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)

    def predict(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return net(norm(z).float()).double()

    return predict


def headroom_gains(
    rewards: torch.Tensor,
    features: torch.Tensor,
    batch: torch.Tensor,
    *,
    everyone: torch.Tensor | None = None,
    confidence: float = 0.95,
    seed: int = 0,
) -> Gains:
    """The gains of the oracle, the best constant and a learned policy (module docstring).

    Args:
        rewards: r[i, a] (n, K): image i at action a, its partner at a random one.
        features: what the policy sees of image i (n, d).
        batch: the batch index of each image (n,) long.
        everyone: r[i, a] with every image of the batch at action a (n, K), for the best
            constant of a whole policy (against the same random baseline); default ``rewards``.
    """
    rewards, features = rewards.double(), features.double()
    everyone = rewards if everyone is None else everyone.double()
    fit, test = batch % 2 == 0, batch % 2 == 1
    if not fit.any() or not test.any():
        raise ValueError("headroom needs at least two scored batches (one to fit, one to test)")
    oracle = _by_batch(rewards.max(1).values - rewards.mean(1), batch, confidence)
    best_action = int(rewards[fit].mean(0).argmax())
    n_test = int(test.sum())
    best_constant = _by_batch(
        _gain_of(rewards[test], torch.full((n_test,), best_action)), batch[test], confidence
    )
    best_all = int(everyone[fit].mean(0).argmax())
    everyone_gain = everyone[test, best_all] - rewards[test].mean(1)
    best_constant_everyone = _by_batch(everyone_gain, batch[test], confidence)
    # a validation part of the fit half (every 4th batch) picks the model and its penalty
    val = fit & (batch % 4 == 2)
    train = fit & ~val
    x, y = features[train], rewards[train] - rewards[train].mean(1, keepdim=True)

    def val_gain(predict) -> float:
        return float(_gain_of(rewards[val], predict(features[val]).argmax(1)).mean())

    ridges = [fit_ridge(x, y, p) for p in RIDGE_PENALTIES]
    linear = max(ridges, key=val_gain)
    mlp = fit_mlp(x, y, features[val], rewards[val], seed=seed)
    chosen = "linear" if val_gain(linear) >= val_gain(mlp) else "mlp"
    scores = {}
    for name, predict in (("linear", linear), ("mlp", mlp)):
        actions = predict(features[test]).argmax(1)
        scores[name] = _by_batch(_gain_of(rewards[test], actions), batch[test], confidence)
    return Gains(
        oracle=oracle,
        best_constant=best_constant,
        best_constant_everyone=best_constant_everyone,
        learnable=scores[chosen],
        learnable_linear=scores["linear"],
        learnable_mlp=scores["mlp"],
        best_action=best_action,
        best_action_everyone=best_all,
        model=chosen,
    )


__all__ = ["Gains", "fit_mlp", "fit_ridge", "headroom_gains"]
