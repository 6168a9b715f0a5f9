"""The agent on disk without pickled code: settings as JSON, weights as tensors.

Stable-Baselines3's own zip (``PPO.save``) stores the agent's settings with cloudpickle, and
``PPO.load`` unpickles them: a shared ``agent.zip`` could run anything. rlmix stores an agent as

- ``agent.zip``: a zip archive of ``rlmix-agent.json`` (plain JSON: the policy's size and
  spaces, PPO's hyperparameters, its progress) and ``weights.pt`` (the policy's and its Adam
  optimiser's state dicts, read with ``torch.load(..., weights_only=True)``), and
- inside ``checkpoint.pt``: the same two parts as the ``agent`` entry (``settings`` text and
  tensors), so the whole checkpoint loads with ``weights_only=True``.

Loading rebuilds the network (:class:`agents.policy.PerImagePolicy`) or the PPO agent
(:func:`agents.ppo.make_ppo`) from the settings and copies the tensors in; nothing from a file is
ever unpickled. A Stable-Baselines3 zip (rlmix < 0.2), a checkpoint that embeds one, or a file
whose JSON carries serialized objects is refused with one line that names the conversion
command for a trusted file: ``python -m rlmix.convert PATH --trust``.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import torch
from stable_baselines3 import PPO

from agents.policy import PerImagePolicy
from envs.spaces import CONTEXT, has_partner, slot_spaces
from rlmix import __version__
from rlmix.errors import ConfigError
from rlmix.io import atomic_write

FORMAT = "rlmix-agent"
FORMAT_VERSION = 1
SETTINGS_NAME = "rlmix-agent.json"
WEIGHTS_NAME = "weights.pt"
PPO_KEYS = (
    "n_steps",
    "batch_size",
    "n_epochs",
    "gamma",
    "gae_lambda",
    "ent_coef",
    "vf_coef",
    "max_grad_norm",
    "target_kl",
    "seed",
)


def _convert_hint(path: str | Path) -> str:
    return (
        f"if you trust it, convert it once with: python -m rlmix.convert {path} --trust "
        "(that unpickles it)"
    )


def agent_state(model: PPO) -> dict[str, Any]:
    """The agent as ``{"settings": JSON text, "policy": state dict, "optimizer": state dict}``."""
    policy = model.policy
    if not isinstance(policy, PerImagePolicy):
        raise ConfigError(f"agent holds a {type(policy).__name__}, not an rlmix PerImagePolicy")
    obs = model.observation_space
    settings = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "rlmix_version": __version__,
        "policy": {
            "embed_dim": policy.embed_dim,
            "hidden": policy.hidden,
            "obs_grid": int(obs["saliency"].shape[-1]),
            "num_classes": int(obs["logits"].shape[0]),
            "logit_clip": float(obs["logits"].high.max()),
            "k": int(model.action_space.n),
            "context": list(CONTEXT),
            "partner_first": has_partner(obs),
        },
        "ppo": {
            "learning_rate": float(model.lr_schedule(1.0)),
            "clip_range": float(model.clip_range(1.0)),
            **{key: getattr(model, key) for key in PPO_KEYS},
        },
        "progress": {"num_timesteps": int(model.num_timesteps), "n_updates": int(model._n_updates)},
    }
    return {
        "settings": json.dumps(settings, sort_keys=True),
        "policy": policy.state_dict(),
        "optimizer": policy.optimizer.state_dict(),
    }


def write_agent(path: str | Path, state: dict[str, Any]) -> Path:
    """Write :func:`agent_state` as an ``agent.zip`` (atomically)."""
    weights = io.BytesIO()
    torch.save({"policy": state["policy"], "optimizer": state["optimizer"]}, weights)

    def write(f) -> None:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(SETTINGS_NAME, state["settings"])
            archive.writestr(WEIGHTS_NAME, weights.getvalue())

    return atomic_write(path, write)


def settings_of(state: dict[str, Any], where: str) -> dict[str, Any]:
    """The checked settings of an agent state; one clear error for anything else."""
    text = state.get("settings")
    if not isinstance(text, str):
        raise ConfigError(f"{where} holds no rlmix agent settings; {_convert_hint(where)}")
    if ":serialized:" in text:
        raise ConfigError(
            f"{where} holds serialized Python objects, which rlmix never loads; "
            f"{_convert_hint(where)}"
        )
    try:
        settings = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"{where}: its agent settings are not valid JSON ({e})") from e
    if not isinstance(settings, dict) or settings.get("format") != FORMAT:
        raise ConfigError(f"{where} is not an rlmix agent (format {settings.get('format')!r})")
    if settings.get("format_version") != FORMAT_VERSION:
        raise ConfigError(
            f"{where} has agent format version {settings.get('format_version')!r}; this rlmix "
            f"{__version__} reads version {FORMAT_VERSION}"
        )
    policy = settings.get("policy")
    ints = ("embed_dim", "hidden", "obs_grid", "num_classes", "k")
    if not isinstance(policy, dict) or not all(
        isinstance(policy.get(k), int) and policy[k] >= 1 for k in ints
    ):
        raise ConfigError(f"{where}: its policy settings are incomplete or not positive integers")
    policy.setdefault("partner_first", False)  # files written before partner-aware decisions
    if not isinstance(policy["partner_first"], bool):
        raise ConfigError(f"{where}: its policy setting 'partner_first' is not true or false")
    if policy.get("context") != list(CONTEXT):
        raise ConfigError(
            f"{where} was trained on the slot context {policy.get('context')}, this rlmix "
            f"observes {list(CONTEXT)}"
        )
    return settings


def read_agent(path: str | Path) -> dict[str, Any]:
    """An ``agent.zip`` as :func:`agent_state` plus the checked ``settings_dict``; refuses
    Stable-Baselines3 zips and anything that would need unpickling."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"agent file '{path}' does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if SETTINGS_NAME not in names:
                if "data" in names and "policy.pth" in names:
                    raise ConfigError(
                        f"agent file '{path}' is a Stable-Baselines3 zip, whose settings are "
                        f"pickled and run code when loaded; {_convert_hint(path)}"
                    )
                raise ConfigError(f"agent file '{path}' is not an rlmix agent (no {SETTINGS_NAME})")
            text = archive.read(SETTINGS_NAME).decode("utf-8")
            weights = archive.read(WEIGHTS_NAME) if WEIGHTS_NAME in names else None
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, KeyError) as e:
        raise ConfigError(f"agent file '{path}' is corrupt or not an rlmix agent: {e}") from e
    state: dict[str, Any] = {"settings": text}
    settings = settings_of(state, f"agent file '{path}'")
    if weights is None:
        raise ConfigError(f"agent file '{path}' has no {WEIGHTS_NAME}")
    try:
        tensors = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for anything but tensors and plain data
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"agent file '{path}': {WEIGHTS_NAME} holds more than tensors ({first[:160]}); "
            f"{_convert_hint(path)}"
        ) from e
    if not isinstance(tensors, dict) or not {"policy", "optimizer"} <= set(tensors):
        raise ConfigError(f"agent file '{path}': {WEIGHTS_NAME} lacks the policy or optimizer")
    return {**state, **tensors, "settings_dict": settings}


def _schedule(value: float):
    return lambda _progress: value


def policy_from_state(state: dict[str, Any], where: str) -> PerImagePolicy:
    """The per-image policy network of an agent state (no PPO, nothing unpickled)."""
    settings = state.get("settings_dict") or settings_of(state, where)
    p = settings["policy"]
    observation, action = slot_spaces(
        p["num_classes"], p["obs_grid"], p["k"], p["logit_clip"], partner=p["partner_first"]
    )
    policy = PerImagePolicy(
        observation,
        action,
        _schedule(settings["ppo"]["learning_rate"]),
        embed_dim=p["embed_dim"],
        hidden=p["hidden"],
        optimizer_kwargs={"foreach": True},
    )
    try:
        policy.load_state_dict(state["policy"])
    except (RuntimeError, KeyError, TypeError) as e:
        raise ConfigError(f"{where}: its weights do not fit its settings ({e})") from e
    policy.set_training_mode(False)
    return policy


def load_policy(path: str | Path) -> tuple[PerImagePolicy, dict[str, Any]]:
    """The policy of an ``agent.zip`` and its settings."""
    state = read_agent(path)
    return policy_from_state(state, f"agent file '{path}'"), state["settings_dict"]


def restore_ppo(model: PPO, state: dict[str, Any], where: str) -> PPO:
    """Copy an agent state (a checkpoint's ``agent``) into a freshly built ``model``: weights,
    optimiser state and progress; the hyperparameters must be the model's."""
    settings = settings_of(state, where)
    mine = json.loads(agent_state(model)["settings"])
    for section in ("policy", "ppo"):
        if settings[section] != mine[section]:
            theirs = settings[section]
            key = next(
                k
                for k in sorted({*mine[section], *theirs})
                if theirs.get(k) != mine[section].get(k)
            )
            raise ConfigError(
                f"{where}: the agent's {section} setting '{key}' is "
                f"{theirs.get(key)!r}, the run's is {mine[section].get(key)!r}"
            )
    try:
        model.policy.load_state_dict(state["policy"])
        model.policy.optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{where}: its agent weights do not fit this agent ({e})") from e
    model.num_timesteps = settings["progress"]["num_timesteps"]
    model._n_updates = settings["progress"]["n_updates"]
    return model


__all__ = [
    "FORMAT",
    "agent_state",
    "load_policy",
    "policy_from_state",
    "read_agent",
    "restore_ppo",
    "settings_of",
    "write_agent",
]
