"""Every random stream of a run, derived from the run seed with one helper.

A run draws randomness from these streams, each a pure function of ``(seed, epoch, stream)``:

==================  ===================================================================
``order``           the training loader's sample order (one permutation per epoch)
``augment``         random crop and flip (per batch index within the epoch)
``mixing``          lam, perm, the R-Mix grid and the CutMix box (a ``torch.Generator``)
``global``          torch's global RNG, reseeded at the epoch start: dropout, the agent's
                    sampled actions and anything else drawing from the default generator
``split``           the class-balanced training budget and the held-out split (no epoch)
``counterfactual``  the same-batch counterfactual's uniform top-k (per epoch and rank): used
                    for scoring only, so turning the counterfactual on changes no other stream
==================  ===================================================================

numpy's global RNG, which Stable-Baselines3 shuffles PPO minibatches with, is the one stream a
run carries across epochs: checkpoints store it (:func:`numpy_rng_state`).

Because nothing carries over from one epoch to the next, an epoch is a pure function of the
seed, the epoch index, the actions and the state at its start: resuming from an epoch-boundary
checkpoint repeats the uninterrupted run exactly on CPU.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

STREAMS = ("order", "augment", "mixing", "global", "split", "counterfactual")


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from ``parts``, stable across processes, platforms and versions."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def stream_seed(seed: int, stream: str, *parts: int) -> int:
    """The seed of ``stream`` (one of :data:`STREAMS`) for the run seed and ``parts``."""
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream '{stream}'; choose one of: {', '.join(STREAMS)}")
    return derive_seed(seed, stream, *parts)


def stream_generator(
    seed: int, stream: str, *parts: int, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded from :func:`stream_seed`."""
    return torch.Generator(device=device).manual_seed(stream_seed(seed, stream, *parts))


def seed_global(seed: int, epoch: int) -> None:
    """Reseed torch's global RNG for ``epoch`` (the ``global`` stream)."""
    torch.manual_seed(stream_seed(seed, "global", epoch))


def numpy_rng_state() -> dict[str, Any]:
    """numpy's global RNG state as checkpoint-safe values (tensors and plain Python)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def set_numpy_rng_state(d: dict[str, Any]) -> None:
    """Restore what :func:`numpy_rng_state` returned."""
    state = (d["name"], d["keys"].numpy().astype(np.uint32), d["pos"], d["has_gauss"], d["cached"])
    np.random.set_state(state)  # noqa: NPY002


__all__ = [
    "STREAMS",
    "derive_seed",
    "numpy_rng_state",
    "seed_global",
    "set_numpy_rng_state",
    "stream_generator",
    "stream_seed",
]
