"""Deliberately broken ``module:function`` rewards (``tests.reward_fixtures:NAME``).

Not a test module: pytest does not collect it. The tests that use these rewards, and assert
the one-line error each must produce, are in ``tests/test_reliability.py`` (the
``tests.reward_fixtures:`` cases of its bad-input table, and the reward that fails in epoch 2)
``tests/test_distributed.py`` (the reward that fails on one rank only) and
``tests/test_launch.py`` (the worker that dies once).
"""

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
    """Fine for the 8 steps of epoch 1, then raises (counterfactual calls are not counted)."""
    CALLS["n"] += 0 if inputs.counterfactual else 1
    if CALLS["n"] > 8:
        raise RuntimeError("the reward server went away")
    return 0.0


def fails_on_rank_1(inputs):
    """Raises on torchrun rank 1 only, from its second step on (rank 0 would wait for it)."""
    import torch.distributed as dist

    CALLS["n"] += 0 if inputs.counterfactual else 1
    if dist.is_initialized() and dist.get_rank() == 1 and CALLS["n"] > 1:
        raise RuntimeError("rank 1's reward server went away")
    return 0.0


def crash_once(inputs):
    """Kills its process once, in the second epoch (step 10), where $RLMIX_CRASH_MARKER does
    not exist yet: a worker that dies mid-run, for the retry tests (``tests/test_launch.py``)."""
    import os

    CALLS["n"] += 0 if inputs.counterfactual else 1
    marker = os.environ.get("RLMIX_CRASH_MARKER")
    if marker and CALLS["n"] == 10 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return 0.0
