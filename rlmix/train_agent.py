"""RL-Mix: train a PPO agent that picks each image's R-Mix top-k while the classifier trains.

    python -m rlmix.train_agent                  # the embedded default, a few minutes on a CPU
    python -m rlmix.train_agent --reward grad_cosine_mean --epochs 6
    python -m rlmix.train_agent --config cifar100_preactresnet18_rlmix   # the paper's setting
    python -m rlmix.train_agent --out runs/default --resume
    torchrun --nproc_per_node=4 -m rlmix.train_agent --config cifar100_preactresnet18_rlmix

One env episode is one classifier epoch; PPO learns online, one decision per image
(:class:`envs.ImageSlotVecEnv`, :mod:`agents.ppo`). The run directory gets ``config.yaml``,
``checkpoint.pt`` (classifier, optimiser, schedule and agent together, atomic, at epoch
boundaries), ``agent.zip`` (the agent alone, as JSON settings and tensors: ``rlmix.train --policy
agent``, :class:`agents.AgentMix`; nothing in either file is unpickled, :mod:`agents.serialize`),
``metrics.json`` (with the per-epoch policy diagnostics), ``timings.json``, ``accuracy.png`` and
TensorBoard logs under ``tb/`` (``step/``, ``epoch/``, ``policy/``, ``test/``, and PPO's
``train/``: approx_kl, clip_fraction, entropy_loss...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from agents.ppo import make_ppo
from agents.serialize import agent_state, convert_hint, restore_ppo, write_agent
from envs.rewards import list_rewards, reward_for
from rlmix import distributed
from rlmix.cli import ArgumentParser, run_main, training_parser
from rlmix.config import Config
from rlmix.errors import ConfigError
from rlmix.run import Run, run_command


def build_parser() -> ArgumentParser:
    return training_parser(
        "python -m rlmix.train_agent",
        "RL-Mix: train a PPO agent (Stable-Baselines3) that chooses, per image, the saliency "
        "percentile at which R-Mix splits it, while the classifier trains. With no arguments it "
        "runs the embedded default (generated shapes dataset, small ResNet).",
        "reward (env.reward; the embedded default's is teach, the paper's grad_cosine): "
        f"{', '.join(list_rewards())}, or module:function (docs/environment.md)",
    )


def agent_config(cfg: Config) -> Config:
    """The agent always sees real saliency and mixes with R-Mix; its same-batch counterfactual
    is scored every step unless ``env.counterfactual_every`` says otherwise."""
    every = 1 if cfg.env.counterfactual_every is None else cfg.env.counterfactual_every
    if cfg.agent.baseline == "counterfactual":
        if every != 1:
            raise ConfigError(
                "config key 'agent.baseline' is 'counterfactual', which needs a counterfactual "
                f"every step: set env.counterfactual_every=1 (got {every})"
            )
        reward = reward_for(cfg.env.reward, "config key 'env.reward'")
        if not reward.has_counterfactual:
            raise ConfigError(
                f"config key 'agent.baseline' is 'counterfactual', but reward '{reward.name}' "
                "needs the step's outcome and has no counterfactual; use agent.baseline=critic"
            )
    return dataclasses.replace(
        cfg,
        policy="agent",
        mix=dataclasses.replace(cfg.mix, mixer="rmix"),
        env=dataclasses.replace(cfg.env, observe="always", counterfactual_every=every),
    )


def train_agent(
    cfg: Config, *, resume: bool = False, progress: bool = True, stop_after: int | None = None
) -> dict[str, Any]:
    """Train classifier and agent for ``cfg.trainer.epochs`` epochs (or until epoch
    ``stop_after``); returns the metrics dict.

    Under torchrun, rank 0 holds the only PPO learner and acts for the global batch through
    :class:`envs.DistributedMixupEnv`; the other ranks follow (and return ``{"exit_code": c}``).
    """
    cfg = agent_config(cfg)
    run = Run(
        cfg,
        resume=resume,
        progress=progress,
        bootstrap=cfg.agent.gamma > 0,
        difference_reward=cfg.agent.baseline == "counterfactual",
    )
    model = None

    def build() -> None:  # on rank 0; an error (a mismatched checkpoint) reaches every rank
        nonlocal model
        model = make_ppo(run.venv, cfg)
        if run.resumed:
            restore_ppo(model, _agent_entry(run), run.out / "checkpoint.pt")

    distributed.on_main(build)
    if not run.is_main:
        return run.follow()
    model.set_logger(run.log.sb3_logger())
    return run.drive(
        model,
        label="RL-Mix",
        payload=lambda: {"agent": agent_state(model)},
        on_save=lambda state: write_agent(run.out / "agent.zip", state["agent"]),
        stop_after=stop_after,
    )


def _agent_entry(run: Run) -> dict[str, Any]:
    """The checkpoint's agent; a checkpoint from before agent format 1 (a pickled SB3 zip inside) is refused."""
    if isinstance(run.section("agent"), torch.Tensor):
        path = run.out / "checkpoint.pt"
        raise ConfigError(
            f"checkpoint '{path}' holds its agent as a Stable-Baselines3 zip, which runs code "
            f"when loaded; {convert_hint(path)}"
        )
    return run.section("agent", dict)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    files = ("checkpoint.pt", "agent.zip", "accuracy.png")
    return run_command(train_agent, args, command="rlmix.train_agent", files=files)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
