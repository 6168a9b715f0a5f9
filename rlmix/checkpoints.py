"""Checkpoints: saved atomically, loaded safely.

A checkpoint is written through :func:`rlmix.io.atomic_write` (a temporary file, then
``os.replace``), so a run killed mid-write leaves the previous one intact; the atomic writers of
:mod:`rlmix.io` are re-exported here for existing callers. Checkpoints load with
``torch.load(..., weights_only=True)`` and are refused when their format, rlmix version
(major.minor) or config differ from the running ones. An RL-Mix checkpoint
holds the agent as JSON settings and tensors too (:mod:`agents.serialize`): nothing in a
checkpoint is unpickled.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from rlmix import __version__
from rlmix.config import Config
from rlmix.errors import ConfigError, RlmixError
from rlmix.io import atomic_write, atomic_write_json, atomic_write_text, check_writable

CHECKPOINT_FORMAT = 2  # 2: the agent as JSON settings and tensors (1: an SB3 zip's bytes)
READABLE_FORMATS = (1, 2)  # a format-1 agent is refused where it would be unpickled


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Save a checkpoint dict atomically, stamped with the rlmix version and format.

    Raises:
        RlmixError: a tensor in ``state`` holds NaN or inf (diverged weights or optimiser
            state); the previous checkpoint is left as it was.
    """
    bad = first_non_finite(state)
    if bad is not None:
        history = state.get("history") or [{}]
        epoch = history[-1].get("epoch") if isinstance(history[-1], dict) else None
        when = f" after epoch {int(epoch)}" if epoch is not None else ""
        raise RlmixError(
            f"not writing checkpoint '{path}': {bad} holds NaN or inf{when} (training "
            "diverged); the previous checkpoint is kept"
        )
    payload = {"format": CHECKPOINT_FORMAT, "rlmix_version": __version__, **state}
    return atomic_write(path, lambda f: torch.save(payload, f))


def first_non_finite(obj: Any, key: str = "") -> str | None:
    """The dotted key of the first floating tensor with a NaN or inf in ``obj``, or None."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() and not bool(torch.isfinite(obj).all()):
            return key or "the state"
        return None
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for k, v in items:
        found = first_non_finite(v, f"{key}.{k}" if key else str(k))
        if found is not None:
            return found
    return None


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(str(version).split(".")[:2])


def load_checkpoint(path: str | os.PathLike, *, config: dict[str, Any] | None = None) -> dict:
    """Load a checkpoint saved by :func:`save_checkpoint` with ``weights_only=True``.

    Args:
        path: the checkpoint file.
        config: if given, the run's resolved config; a checkpoint recorded with a different
            config (other than ``out``) is refused: even the epoch count shapes the schedule.

    Raises:
        ConfigError: the file is missing, unreadable, corrupt, from another checkpoint format or
            rlmix major.minor version, or from a run whose config differs.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint '{path}' does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"checkpoint '{path}' is corrupt or not an rlmix checkpoint: {first}"
        ) from e
    if not isinstance(state, dict) or "format" not in state or "rlmix_version" not in state:
        raise ConfigError(f"checkpoint '{path}' has an unknown format; was it written by rlmix?")
    if state["format"] not in READABLE_FORMATS:
        raise ConfigError(
            f"checkpoint '{path}' has format {state['format']!r}, this rlmix {__version__} reads "
            f"format {CHECKPOINT_FORMAT}"
        )
    saved = state["rlmix_version"]
    if _major_minor(saved) != _major_minor(__version__):
        raise ConfigError(
            f"checkpoint '{path}' was written by rlmix {saved}, this is rlmix {__version__}; "
            f"resume it with rlmix {'.'.join(_major_minor(saved))}.x or start a new run"
        )
    if config is not None and "config" in state:
        diff = config_difference(state["config"], config)
        if diff:
            raise ConfigError(
                f"checkpoint '{path}' was written with a different config ({diff}); "
                "resume with the config it was written with"
            )
    return state


# Keys that may change between a run and its resumption.
_RESUMABLE_KEYS = {"out"}


def config_difference(saved: dict, current: dict, *, there: str = "in the checkpoint") -> str:
    """Describe the first differing key between two config dicts, ignoring resumable keys. A
    key the saved config lacks (written by an older rlmix) counts as its default."""
    defaults = _flatten(Config().to_dict())
    flat_a, flat_b = _flatten(saved), _flatten(current)
    for key in sorted(set(flat_a) | set(flat_b)):
        if key in _RESUMABLE_KEYS:
            continue
        old = flat_a.get(key, defaults.get(key))
        if old != flat_b.get(key):
            return f"{key}: {old!r} {there}, {flat_b.get(key)!r} now"
    return ""


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k not in ("options",):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


__all__ = [
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "check_writable",
    "config_difference",
    "first_non_finite",
    "load_checkpoint",
    "save_checkpoint",
]
