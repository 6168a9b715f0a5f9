"""Build, save and load the Stable-Baselines3 PPO agent that drives :class:`envs.MixupEnv`."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.policy import PerImagePolicy
from rlmix.config import Config
from rlmix.errors import ConfigError


def make_vec_env(env: Any) -> DummyVecEnv:
    """Wrap one env instance in SB3's single-process vector env."""
    return DummyVecEnv([lambda: env])


def make_ppo(env: Any, cfg: Config, *, device: str = "cpu") -> PPO:
    """A PPO agent with the per-image policy, configured from ``cfg.agent``.

    The agent runs on ``device`` (CPU by default: its networks are tiny and the classifier's
    device is chosen separately by ``trainer.device``).
    """
    a = cfg.agent
    steps = env.trainer.steps_per_epoch
    if steps % a.n_steps and a.n_steps % steps:
        warnings.warn(
            f"agent.n_steps ({a.n_steps}) and the epoch length ({steps} steps) do not divide each "
            "other: checkpoints are only written where a rollout ends on an epoch boundary. "
            "Set agent.n_steps to a divisor or multiple of the epoch length.",
            stacklevel=2,
        )
    return PPO(
        PerImagePolicy,
        make_vec_env(env),
        learning_rate=a.learning_rate,
        n_steps=a.n_steps,
        batch_size=a.batch_size,
        n_epochs=a.n_epochs,
        gamma=a.gamma,
        gae_lambda=a.gae_lambda,
        clip_range=a.clip_range,
        ent_coef=a.ent_coef,
        vf_coef=a.vf_coef,
        max_grad_norm=a.max_grad_norm,
        target_kl=a.target_kl,
        policy_kwargs={"embed_dim": a.embed_dim, "hidden": a.hidden},
        seed=cfg.seed,
        device=device,
        verbose=0,
    )


def agent_to_bytes(model: PPO) -> torch.Tensor:
    """The agent's SB3 zip file as a uint8 tensor (so it fits a weights-only checkpoint)."""
    buf = io.BytesIO()
    model.save(buf)
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


def agent_from_bytes(data: torch.Tensor, env: Any, *, device: str = "cpu") -> PPO:
    """Rebuild a PPO agent from :func:`agent_to_bytes` output, attached to ``env``.

    SB3 agent files contain pickled Python objects: load only files you trust.
    """
    return PPO.load(io.BytesIO(data.numpy().tobytes()), env=make_vec_env(env), device=device)


def load_agent(path: str | Path, *, device: str = "cpu") -> PPO:
    """Load an exported ``agent.zip`` (trusted files only: SB3 zips hold pickled objects)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"agent file '{path}' does not exist")
    try:
        return PPO.load(path, device=device)
    except Exception as e:  # SB3 raises many types for foreign or truncated files
        raise ConfigError(f"agent file '{path}' could not be loaded: {e}") from e
