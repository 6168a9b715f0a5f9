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

Before anything is built, every setting's presence, type and range is checked (:data:`SPEC`)
and the sizes the settings declare against the shapes of the stored tensors
(:func:`check_weights`), so an edited or damaged file is one line naming the setting, never a
traceback or an allocation sized by a number in a small file.
"""

from __future__ import annotations

import io
import json
import math
import shlex
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from stable_baselines3 import PPO

from agents.policy import PerImagePolicy, slot_features
from envs.spaces import CONTEXT, has_partner, slot_spaces
from rlmix import __version__
from rlmix.checkpoints import first_non_finite
from rlmix.data import MAX_CLASSES
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


def convert_hint(path: str | Path) -> str:
    """How to convert a trusted old file: the real command line, the path shell-quoted."""
    return (
        f"if you trust it, convert it once with: python -m rlmix.convert "
        f"{shlex.quote(str(path))} --trust (that unpickles it)"
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int_at_least(low: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: _is_int(v) and v >= low), f"an integer >= {low}"


_POSITIVE = (lambda v: _is_number(v) and v > 0), "a finite number > 0"
_UNIT = (lambda v: _is_number(v) and 0 <= v <= 1), "a number in [0, 1]"
_FINITE = _is_number, "a finite number"
# section -> key -> (check, what it must be); sizes are checked against the weights later
SPEC: dict[str, dict[str, tuple[Callable[[Any], bool], str]]] = {
    "policy": {
        "embed_dim": _int_at_least(1),
        "hidden": _int_at_least(1),
        "obs_grid": _int_at_least(1),
        "num_classes": (
            lambda v: _is_int(v) and 1 <= v <= MAX_CLASSES,
            f"an integer in [1, {MAX_CLASSES}]",
        ),
        "k": _int_at_least(2),
        "logit_clip": _POSITIVE,
        "partner_first": (lambda v: isinstance(v, bool), "true or false"),
    },
    "ppo": {
        "learning_rate": _POSITIVE,
        "clip_range": _POSITIVE,
        "n_steps": _int_at_least(1),
        "batch_size": _int_at_least(1),
        "n_epochs": _int_at_least(1),
        "gamma": _UNIT,
        "gae_lambda": _UNIT,
        "ent_coef": _FINITE,
        "vf_coef": _FINITE,
        "max_grad_norm": _FINITE,
        "target_kl": ((lambda v: v is None or _POSITIVE[0](v)), "null or a finite number > 0"),
        "seed": ((lambda v: v is None or (_is_int(v) and v >= 0)), "null or an integer >= 0"),
    },
    "progress": {"num_timesteps": _int_at_least(0), "n_updates": _int_at_least(0)},
}
MAX_SETTINGS_BYTES = 2**20  # the JSON is a few hundred bytes
MAX_WEIGHTS_BYTES = 2**30  # the default policy's weights are ~100 kB


def settings_of(state: dict[str, Any], path: str | Path, what: str = "agent file") -> dict:
    """The checked settings of an agent state read from ``path`` (``what``: an agent file or a
    checkpoint): every section, field, type and range; one clear error for anything else."""
    where = f"{what} '{path}'"
    text = state.get("settings")
    if not isinstance(text, str):
        raise ConfigError(f"{where} holds no rlmix agent settings; {convert_hint(path)}")
    if ":serialized:" in text:
        raise ConfigError(
            f"{where} holds serialized Python objects, which rlmix never loads; "
            f"{convert_hint(path)}"
        )
    try:
        settings = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"{where}: its agent settings are not valid JSON ({e})") from e
    if not isinstance(settings, dict):
        raise ConfigError(
            f"{where} is not an rlmix agent (its settings are a JSON {type(settings).__name__}, "
            "not an object)"
        )
    if settings.get("format") != FORMAT:
        raise ConfigError(f"{where} is not an rlmix agent (format {settings.get('format')!r})")
    if settings.get("format_version") != FORMAT_VERSION:
        raise ConfigError(
            f"{where} has agent format version {settings.get('format_version')!r}; this rlmix "
            f"{__version__} reads version {FORMAT_VERSION}"
        )
    policy = settings.get("policy")
    if isinstance(policy, dict):
        policy.setdefault("partner_first", False)  # files written before partner-aware decisions
    for name, fields in SPEC.items():
        section = settings.get(name)
        if not isinstance(section, dict):
            problem = (
                f"hold a JSON {type(section).__name__} as the section '{name}'"
                if name in settings
                else f"lack the section '{name}'"
            )
            raise ConfigError(
                f"{where}: its settings {problem} (an rlmix agent has the objects "
                f"{', '.join(SPEC)}); it was not written by rlmix or was edited"
            )
        for key, (check, want) in fields.items():
            if not check(section.get(key)):
                got = f"got {section[key]!r}" if key in section else "missing"
                raise ConfigError(f"{where}: its {name} setting '{key}' must be {want} ({got})")
    if policy.get("context") != list(CONTEXT):
        raise ConfigError(
            f"{where} was trained on the slot context {policy.get('context')}, this rlmix "
            f"observes {list(CONTEXT)}"
        )
    return settings


def check_weights(state: dict[str, Any], settings: dict[str, Any], where: str) -> None:
    """The stored tensors of an agent state against its checked settings, before a network is
    built: the policy's and optimiser's state dicts are dicts, the sizes the settings declare
    are the shapes of the weights (so a small file cannot make the loader allocate more than it
    holds), and every weight is finite."""
    for key in ("policy", "optimizer"):
        if key not in state:
            raise ConfigError(f"{where}: its agent has no {key} state")
    weights, optimizer = state["policy"], state["optimizer"]
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise ConfigError(f"{where}: its policy weights are not a dict of named tensors")
    if not isinstance(optimizer, dict):
        raise ConfigError(f"{where}: its optimizer state is not a dict")
    p = settings["policy"]
    in_features = slot_features(p["obs_grid"], p["partner_first"])
    declared = {  # the first layer of the extractor, the actor's hidden layer and its head
        "features_extractor.mlp.0.weight": (p["embed_dim"], in_features),
        "mlp_extractor.policy_net.0.weight": (p["hidden"], p["embed_dim"]),
        "action_net.weight": (p["k"], p["hidden"]),
    }
    sizes = ", ".join(
        f"{k}={str(p[k]).lower()}"
        for k in ("obs_grid", "partner_first", "embed_dim", "hidden", "k")
    )
    for key, shape in declared.items():
        tensor = weights.get(key)
        if tensor is None:
            raise ConfigError(f"{where}: its policy weights lack '{key}'")
        if tuple(tensor.shape) != shape:
            raise ConfigError(
                f"{where}: its settings ({sizes}) do not fit its weights: '{key}' has shape "
                f"{tuple(tensor.shape)}, the settings need {shape}"
            )
    bad = first_non_finite({"policy": weights, "optimizer": optimizer})
    if bad is not None:
        raise ConfigError(
            f"{where}: its tensor '{bad}' holds NaN or inf (the agent diverged); use an earlier "
            "agent or train it again"
        )


def _member(archive: zipfile.ZipFile, name: str, limit: int, where: str) -> bytes | None:
    """The bytes of one member of an agent zip (None if absent), its size checked before it is
    decompressed."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    if info.file_size > limit:
        raise ConfigError(
            f"{where}: its {name} unpacks to {info.file_size} bytes, more than an rlmix agent "
            f"holds ({limit}); it is not an rlmix agent"
        )
    return archive.read(info)


def read_agent(path: str | Path) -> dict[str, Any]:
    """An ``agent.zip`` as :func:`agent_state` plus the checked ``settings_dict``; refuses
    Stable-Baselines3 zips, anything that would need unpickling, and settings that do not fit
    the stored weights, before anything is built."""
    path = Path(path)
    where = f"agent file '{path}'"
    if path.is_dir():
        inside = path / "agent.zip"
        use = f": set it to {inside}" if inside.is_file() else ": give the agent.zip inside it"
        raise ConfigError(f"{where} is a directory{use}")
    if not path.is_file():
        raise ConfigError(f"{where} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if SETTINGS_NAME not in names:
                if "data" in names and "policy.pth" in names:
                    raise ConfigError(
                        f"{where} is a Stable-Baselines3 zip, whose settings are pickled and "
                        f"run code when loaded; {convert_hint(path)}"
                    )
                raise ConfigError(f"{where} is not an rlmix agent (no {SETTINGS_NAME})")
            text = _member(archive, SETTINGS_NAME, MAX_SETTINGS_BYTES, where)
            weights = _member(archive, WEIGHTS_NAME, MAX_WEIGHTS_BYTES, where)
            text = text.decode("utf-8")
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, EOFError, RuntimeError) as e:
        raise ConfigError(f"{where} is corrupt or not an rlmix agent: {e}") from e
    state: dict[str, Any] = {"settings": text}
    settings = settings_of(state, path)
    if weights is None:
        raise ConfigError(f"{where} has no {WEIGHTS_NAME}")
    try:
        tensors = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for anything but tensors and plain data
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"{where}: {WEIGHTS_NAME} holds more than tensors ({first[:160]}); {convert_hint(path)}"
        ) from e
    if not isinstance(tensors, dict) or not {"policy", "optimizer"} <= set(tensors):
        raise ConfigError(f"{where}: {WEIGHTS_NAME} lacks the policy or optimizer")
    check_weights(tensors, settings, where)
    return {**state, **tensors, "settings_dict": settings}


def _schedule(value: float):
    return lambda _progress: value


def policy_from_state(state: dict[str, Any], path: str | Path) -> PerImagePolicy:
    """The per-image policy network of an agent state read from ``path`` by :func:`read_agent`
    (checked; no PPO, nothing unpickled)."""
    p, ppo = state["settings_dict"]["policy"], state["settings_dict"]["ppo"]
    observation, action = slot_spaces(
        p["num_classes"], p["obs_grid"], p["k"], p["logit_clip"], partner=p["partner_first"]
    )
    policy = PerImagePolicy(
        observation,
        action,
        _schedule(ppo["learning_rate"]),
        embed_dim=p["embed_dim"],
        hidden=p["hidden"],
        optimizer_kwargs={"foreach": True},
    )
    try:
        policy.load_state_dict(state["policy"])
    except (RuntimeError, KeyError, TypeError) as e:
        raise ConfigError(f"agent file '{path}': its weights do not fit its settings ({e})") from e
    policy.set_training_mode(False)
    return policy


def load_policy(path: str | Path) -> tuple[PerImagePolicy, dict[str, Any]]:
    """The policy of an ``agent.zip`` and its settings."""
    state = read_agent(path)
    return policy_from_state(state, path), state["settings_dict"]


def restore_ppo(model: PPO, state: dict[str, Any], path: str | Path) -> PPO:
    """Copy an agent state (the ``agent`` of the checkpoint ``path``) into a freshly built
    ``model``: weights, optimiser state and progress; the hyperparameters must be the model's."""
    where = f"checkpoint '{path}'"
    settings = settings_of(state, path, "checkpoint")
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
    check_weights(state, settings, where)
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
    "check_weights",
    "convert_hint",
    "load_policy",
    "policy_from_state",
    "read_agent",
    "restore_ppo",
    "settings_of",
    "write_agent",
]
