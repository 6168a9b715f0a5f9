"""Typed run configuration: dataclasses loaded from YAML with dotted command-line overrides.

A config file mirrors :class:`Config`::

    seed: 0
    trainer: {epochs: 300, lr_max: 0.3}
    mix: {mixer: rmix, k: 10, grids: [2, 4]}

Overrides use dotted keys, e.g. ``--set trainer.lr_max=0.2 --set mix.grids=[2,4]``; values are
parsed as YAML. Loading validates every key, type and range and raises
:class:`rlmix.errors.ConfigError` naming the offending key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from rlmix.errors import ConfigError
from rlmix.io import atomic_write_text

DEFAULT_CONFIG = "default"
MAX_SEED = 2**32 - 1  # numpy's (and so Stable-Baselines3's) seed range


@dataclass
class DataConfig:
    name: str = "shapes"  # dataset: see rlmix.data.list_datasets()
    root: str = "data"  # where datasets live (and where `shapes` is cached)
    download: bool = False  # let torchvision download CIFAR or (Fashion-)MNIST (needs network)
    augment: bool = True  # random crop with padding + horizontal flip on training batches
    eval_batch_size: int = 500  # batch size of the test loader
    val_size: int = 0  # held-out images carved from the training budget when a reward needs them
    hold_out: str = "auto"  # carve val_size: auto (only when a reward uses it) or always
    train_per_class: int = 0  # class-balanced training budget: images per class (0: all)
    split_seed: int = 0  # seed of the held-out split and the budget (not the run seed)
    options: dict[str, Any] = field(default_factory=dict)  # options of dataset `name` only


@dataclass
class ModelConfig:
    name: str = "resnet_tiny"  # see rlmix.models.list_models()
    options: dict[str, Any] = field(default_factory=dict)  # options of model `name` only


@dataclass
class TrainerConfig:
    epochs: int = 12  # classifier training epochs (one episode each)
    batch_size: int = 100  # images per step B
    lr_start: float = 3e-3  # OneCycleLR initial learning rate
    lr_max: float = 0.3  # OneCycleLR peak learning rate
    lr_end: float = 3e-5  # OneCycleLR final learning rate
    pct_start: float = 0.3  # fraction of steps spent warming up to lr_max
    momentum: float = 0.9  # SGD momentum (held constant)
    nesterov: bool = True  # Nesterov momentum
    weight_decay: float = 1e-4  # SGD weight decay
    loss: str = "soft_ce"  # soft_ce (reference code) or bce (paper text)
    amp: bool = False  # bfloat16 autocast on CUDA (ignored on CPU)
    device: str = "auto"  # auto, cpu, cuda or cuda:N (under torchrun: cuda = cuda:LOCAL_RANK)
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over the global batch
    checkpoint_every: int = 1  # write checkpoint.pt every N epochs (and after the last)


@dataclass
class MixConfig:
    mixer: str = (
        "rmix"  # rmix, cutmix, mixup, none, saliencymix, puzzlemix, comixup, manifold_mixup
    )
    k: int = 10  # size K of the top-k space linspace(0, 0.99, K)
    grids: list[int] = field(default_factory=lambda: [2, 4])  # mixing grid drawn per batch
    alpha: float = 1.0  # lam ~ Beta(alpha, alpha)
    lam_mode: str = "batch"  # one lam per batch (batch) or one per image (elem)
    saliency_mode: str = "train"  # model mode for the saliency pass: train or eval
    options: dict[str, Any] = field(default_factory=dict)  # of mix.mixer (docs/environment.md)


@dataclass
class EnvConfig:
    reward: str = "grad_cosine"  # reward name (envs.rewards.list_rewards) or module:function
    log_rewards: list[str] = field(default_factory=list)  # more rewards to compute and log only
    obs_grid: int = 8  # side of the pooled saliency map in the observation
    logit_clip: float = 20.0  # observation logits are clipped to [-logit_clip, logit_clip]
    observe: str = "auto"  # compute saliency for every batch: auto (when used) or always
    eval_every: int = 1  # evaluate on the test split every N epochs (and after the last)
    eval_fgsm: bool = True  # include the FGSM error in evaluations
    eval_localization: bool = True  # include CAM localisation where the data has boxes
    counterfactual_every: int | None = None  # score a random top-k on every Nth step's state
    # (policy_gain; 0 off; None: 1 for rlmix.train_agent, 0 for rlmix.train)
    ema_decay: float = 0.99  # per-step decay of the EMA teacher (ema_agreement, teach rewards)
    ema_decay_end: float | None = None  # the decay at the run's end: it follows the LR's fall
    # from ema_decay (None: constant)
    partner_first: bool = False  # draw partners, lam and grid before the action and show them


@dataclass
class AgentConfig:
    learning_rate: float = 1e-3  # PPO Adam learning rate
    n_steps: int = (
        10  # env steps (batches) per rollout, at most; a rollout also ends at an epoch end
    )
    batch_size: int = 250  # PPO minibatch size, in decisions (one per image)
    n_epochs: int = 10  # PPO epochs per rollout
    gamma: float = 0.0  # discount: 0, each image's reward answers its own action
    gae_lambda: float = 0.95  # GAE lambda (no effect at gamma 0)
    clip_range: float = 0.2  # PPO ratio clip (per image)
    ent_coef: float = 0.0  # entropy bonus
    vf_coef: float = 0.5  # value loss weight
    max_grad_norm: float = 0.5  # gradient clipping
    target_kl: float | None = None  # stop PPO epochs early above this KL
    baseline: str = "critic"  # critic: PPO's advantage of r_i; counterfactual: of r_i - r_i(random)
    embed_dim: int = 64  # per-image embedding width of the policy
    hidden: int = 64  # hidden width of the actor and critic heads


@dataclass
class FrozenAgentConfig:
    path: str = ""  # agent.zip applied by `rlmix.train --policy agent` (no learning)
    deterministic: bool = False  # most likely top-k instead of a sampled one


@dataclass
class Config:
    seed: int = 0  # seeds data order, augmentation, mixing and initialisation
    out: str = "runs/default"  # run directory: config, checkpoints, logs, metrics, plots
    policy: str = (
        "rmix"  # fixed policy for rlmix.train: rmix, constant, cutmix_plus, mixup, vanilla, agent,
        # saliencymix, puzzlemix, comixup, manifold_mixup
    )
    constant_topk: float = 0.5  # the q used by the `constant` policy
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    frozen_agent: FrozenAgentConfig = field(default_factory=FrozenAgentConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_CHOICES = {
    "mix.mixer": (
        "rmix",
        "cutmix",
        "mixup",
        "none",
        "saliencymix",
        "puzzlemix",
        "comixup",
        "manifold_mixup",
    ),
    "mix.saliency_mode": ("train", "eval"),
    "mix.lam_mode": ("batch", "elem"),
    "trainer.loss": ("soft_ce", "bce"),
    "env.observe": ("auto", "always"),
    "data.hold_out": ("auto", "always"),
    "agent.baseline": ("critic", "counterfactual"),
}


def _check_ranges(cfg: Config) -> None:
    t, m, e, a = cfg.trainer, cfg.mix, cfg.env, cfg.agent
    checks = [
        ("trainer.epochs", t.epochs >= 1, "must be >= 1"),
        ("trainer.batch_size", t.batch_size >= 2, "must be >= 2"),
        ("trainer.lr_start", t.lr_start > 0, "must be > 0"),
        ("trainer.lr_max", t.lr_max >= t.lr_start, "must be >= trainer.lr_start"),
        ("trainer.lr_end", 0 < t.lr_end <= t.lr_start, "must be in (0, trainer.lr_start]"),
        ("trainer.pct_start", 0 < t.pct_start < 1, "must be in (0, 1)"),
        ("trainer.momentum", 0 <= t.momentum < 1, "must be in [0, 1)"),
        ("trainer.weight_decay", t.weight_decay >= 0, "must be >= 0"),
        ("mix.k", m.k >= 2, "must be >= 2"),
        (
            "mix.grids",
            len(m.grids) > 0 and min(m.grids) >= 1,
            "must be a non-empty list of ints >= 1",
        ),
        ("mix.alpha", m.alpha > 0, "must be > 0"),
        ("env.obs_grid", e.obs_grid >= 1, "must be >= 1"),
        ("env.logit_clip", e.logit_clip > 0, "must be > 0"),
        ("env.eval_every", e.eval_every >= 1, "must be >= 1"),
        (
            "env.counterfactual_every",
            e.counterfactual_every is None or e.counterfactual_every >= 0,
            "must be >= 0 (0: off)",
        ),
        ("env.ema_decay", 0 <= e.ema_decay < 1, "must be in [0, 1)"),
        (
            "env.ema_decay_end",
            e.ema_decay_end is None or 0 <= e.ema_decay_end < 1,
            "must be in [0, 1) or null (constant decay)",
        ),
        ("data.eval_batch_size", cfg.data.eval_batch_size >= 1, "must be >= 1"),
        ("data.val_size", cfg.data.val_size >= 0, "must be >= 0"),
        ("data.train_per_class", cfg.data.train_per_class >= 0, "must be >= 0"),
        ("data.split_seed", 0 <= cfg.data.split_seed <= MAX_SEED, f"must be in [0, {MAX_SEED}]"),
        ("trainer.checkpoint_every", t.checkpoint_every >= 1, "must be >= 1"),
        ("agent.learning_rate", a.learning_rate > 0, "must be > 0"),
        ("agent.n_steps", a.n_steps >= 1, "must be >= 1"),
        ("agent.batch_size", a.batch_size >= 2, "must be >= 2"),
        ("agent.n_epochs", a.n_epochs >= 1, "must be >= 1"),
        ("agent.gamma", 0 <= a.gamma <= 1, "must be in [0, 1]"),
        ("agent.gae_lambda", 0 <= a.gae_lambda <= 1, "must be in [0, 1]"),
        ("agent.clip_range", a.clip_range > 0, "must be > 0"),
        ("agent.embed_dim", a.embed_dim >= 1, "must be >= 1"),
        ("agent.hidden", a.hidden >= 1, "must be >= 1"),
        ("constant_topk", 0 <= cfg.constant_topk < 1, "must be in [0, 1)"),
        ("seed", 0 <= cfg.seed <= MAX_SEED, f"must be in [0, {MAX_SEED}]"),
    ]
    for key, ok, why in checks:
        if not ok:
            raise ConfigError(f"config key '{key}' {why} (got {_get(cfg, key)!r})")
    for key, choices in _CHOICES.items():
        value = _get(cfg, key)
        if value not in choices:
            raise ConfigError(
                f"config key '{key}' must be one of {', '.join(choices)} (got {value!r})"
            )


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _suggest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a type hint; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list (got {value!r})")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping (got {value!r})")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value) if abs(value) < 1e308 else math.inf
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads "3e-3" as a string
            value = float(value)
        except ValueError:
            pass
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"config key '{key}' must be of type {hint.__name__} (got {value!r})")
    if hint is float and not math.isfinite(value):
        raise ConfigError(f"config key '{key}' must be a finite number (got {value!r})")
    return value


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        where = f"'{prefix.rstrip('.')}'" if prefix else "the top level"
        raise ConfigError(f"config section {where} must be a mapping (got {data!r})")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in hints:
            raise ConfigError(f"unknown config key '{prefix}{key}'{_suggest(str(key), names)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, f"{prefix}{key}")
    return cls(**kwargs)


def _merge(base: dict, update: dict, into_options: bool = False) -> dict:
    """``update`` merged into ``base``. An ``options`` mapping is replaced as a whole (a config
    or ``--set model.options={width: 32}`` says all of them) unless ``into_options``: a dotted
    ``--set data.options.path=X`` sets that one option and keeps the others."""
    out = dict(base)
    for k, v in update.items():
        mergeable = isinstance(v, dict) and isinstance(out.get(k), dict)
        if mergeable and (k != "options" or into_options):
            out[k] = _merge(out[k], v, into_options)
        else:
            out[k] = v
    return out


def packaged_configs() -> list[str]:
    """Names of the configs shipped with rlmix (``default`` and the paper recipes)."""
    folder = resources.files("rlmix") / "configs"
    return sorted(f.name[:-5] for f in folder.iterdir() if f.name.endswith(".yaml"))


def resolve_config_path(name_or_path: str | Path):
    """A config path, or the name of a config shipped in ``rlmix/configs`` (``default``,
    ``cifar100_preactresnet18_rmix``; read through ``importlib.resources``, so installed
    wheels find them too)."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") and not path.exists():
        packaged = resources.files("rlmix") / "configs" / f"{name_or_path}.yaml"
        if packaged.is_file():
            return packaged
        raise ConfigError(
            f"config file '{name_or_path}' not found (and no shipped config of that name: "
            f"{', '.join(packaged_configs())})"
        )
    if path.is_dir():
        raise ConfigError(f"config '{name_or_path}' is a directory, not a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file '{name_or_path}' not found")
    return path


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, turning syntax errors into one line with the line number."""
    path = resolve_config_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config '{path}': {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"cannot read config '{path}': not UTF-8 text (byte {e.start}); is it a YAML file?"
        ) from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"YAML syntax error in '{path}'{where}: {problem}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config '{path}' must be a YAML mapping at the top level")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``section.key=value`` into the dotted key and the YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{text}': value is not valid YAML") from e
    return key.strip(), value


def _nest(dotted: str, value: Any) -> dict:
    out: dict = {}
    node = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def leaf_keys() -> dict[str, str]:
    """Map each unambiguous leaf name (``reward``, ``batch_size``...) to its dotted key."""
    seen: dict[str, list[str]] = {}
    for f in dataclasses.fields(Config):
        if dataclasses.is_dataclass(f.type) or isinstance(f.default_factory, type):
            for g in dataclasses.fields(f.default_factory):
                seen.setdefault(g.name, []).append(f"{f.name}.{g.name}")
        else:
            seen.setdefault(f.name, []).append(f.name)
    return {k: v[0] for k, v in seen.items() if len(v) == 1}


# Sections whose ``options`` belong to the ``name`` they were written for.
_NAMED_SECTIONS = {"data": DataConfig, "model": ModelConfig}


def _drop_foreign_options(data: dict, updates: list[dict]) -> dict:
    """``data`` without the ``options`` of a section whose ``name`` the updates change.

    A config's dataset (or model) options are meant for its dataset (or model): switching
    ``data.name`` drops them, so ``--set data.name=mnist`` works from a config written for
    ``shapes``. Options the updates set themselves are applied afterwards and still checked.
    """
    out = dict(data)
    for section, cls in _NAMED_SECTIONS.items():
        base = out.get(section)
        if not isinstance(base, dict) or not base.get("options"):
            continue
        names = [
            u[section]["name"]
            for u in updates
            if isinstance(u.get(section), dict) and "name" in u[section]
        ]
        if names and names[-1] != base.get("name", cls().name):
            out[section] = {k: v for k, v in base.items() if k != "options"}
    return out


def load_config(
    config: str | Path | dict | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
) -> Config:
    """Build a validated :class:`Config`.

    Args:
        config: a YAML path, a shipped config's name, a dict, or None for the embedded default
            (``default``).
        overrides: ``["trainer.lr_max=0.2", ...]`` or ``{"trainer.lr_max": 0.2, "reward": ...}``;
            keys are dotted paths, or leaf names that occur in one section only. An override
            that changes ``data.name`` or ``model.name`` drops the config's options for the
            previous dataset or model.
    """
    if config is None:
        data = read_yaml(DEFAULT_CONFIG)
    elif isinstance(config, dict):
        data = dict(config)
    else:
        data = read_yaml(config)
    if isinstance(overrides, list):
        overrides = dict(parse_override(o) for o in overrides)
    leaves = leaf_keys()
    updates, into_options = [], []
    for key, value in (overrides or {}).items():
        dotted = key if "." in key or key not in leaves else leaves[key]
        if isinstance(value, dict) and "." not in dotted and key not in leaves:
            updates.append({dotted: value})
        else:
            updates.append(_nest(dotted, value))
        into_options.append(".options." in dotted)
    data = _drop_foreign_options(data, updates)
    for update, into in zip(updates, into_options, strict=True):
        data = _merge(data, update, into)
    cfg = _build(Config, data, "")
    _check_ranges(cfg)
    _check_model_name(cfg.model.name)
    return cfg


def _check_model_name(name: str) -> None:
    """A built-in model, ``package.module:function`` or ``timm/<name>``; such a model takes any
    ``model.options`` (its constructor checks them when the run builds it)."""
    from rlmix.models import check_model_name  # imports torch: keep importing config.py light

    try:
        check_model_name(name)
    except ValueError as e:
        raise ConfigError(f"config key 'model.name': {e}") from e


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically."""
    return atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
