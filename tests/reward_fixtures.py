"""``module:function`` rewards for the bad-input tests (importable as tests.reward_fixtures:NAME)."""

import torch

CALLS = {"n": 0}


def broken(inputs):
    return {}["x"]


def text(inputs):
    return "high"


def wrong_shape(inputs):
    return torch.zeros(3)


def nan_per_image(inputs):
    out = torch.zeros(inputs.q.shape[0])
    out[1] = float("nan")
    return out


def fails_in_epoch_2(inputs):
    """Fine for the 8 steps of epoch 1, then raises."""
    CALLS["n"] += 1
    if CALLS["n"] > 8:
        raise RuntimeError("the reward server went away")
    return 0.0
