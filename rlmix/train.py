"""Train a classifier with a fixed mix-up policy through the environment.

    python -m rlmix.train                        # R-Mix on the embedded default
    python -m rlmix.train --policy cutmix_plus --epochs 10 --out runs/cutmix
    python -m rlmix.train --config cifar100_preactresnet18_rmix --set data.root=/data
    python -m rlmix.train --policy agent --set frozen_agent.path=runs/default/agent.zip
    python -m rlmix.train --out runs/x --resume  # continue an interrupted run
    torchrun --nproc_per_node=4 -m rlmix.train --config cifar100_wrn28_10_rmix   # 4 GPUs

The policies: ``rmix`` (R-Mix, random top-k), ``constant`` (top-k ``constant_topk``),
``cutmix_plus``, ``mixup``, ``vanilla``, the paper's comparison set ``saliencymix``,
``puzzlemix``, ``comixup``, ``manifold_mixup`` (docs/environment.md), and ``agent``: a trained RL-Mix
agent applied frozen.
The run directory gets ``config.yaml`` (resolved), ``checkpoint.pt`` (atomic), ``metrics.json``,
``timings.json``, ``accuracy.png`` and TensorBoard logs under ``tb/``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import agents  # noqa: F401  (registers the frozen-agent policy "agent")
from baselines import PolicyRunner, list_policies, make_policy, policy_mixer
from rlmix import distributed
from rlmix.cli import ArgumentParser, run_main, training_parser
from rlmix.config import Config
from rlmix.errors import ConfigError
from rlmix.run import Run, run_command

LABELS = {
    "rmix": "R-Mix",
    "cutmix_plus": "CutMix+",
    "mixup": "Mixup",
    "agent": "frozen agent",
    "saliencymix": "SaliencyMix",
    "puzzlemix": "PuzzleMix",
    "comixup": "Co-Mixup",
    "manifold_mixup": "Manifold Mixup",
}


def build_parser() -> ArgumentParser:
    p = training_parser(
        "python -m rlmix.train",
        "Train a classifier with a fixed mix-up policy (R-Mix, CutMix+, Mixup, constant top-k, "
        "vanilla, SaliencyMix, PuzzleMix, Co-Mixup, Manifold Mixup, or a frozen RL-Mix agent) "
        "through the rlmix environment.",
        "reward logged per step (env.reward), e.g. grad_cosine, none",
    )
    p.add_argument(
        "--policy", choices=list_policies(), help="fixed policy (config key: policy; default rmix)"
    )
    return p


def resolve_fixed_config(cfg: Config, policy: str) -> Config:
    """The config with ``policy`` set, the mixer it needs, no counterfactual unless
    ``env.counterfactual_every`` asks for one, and partners drawn first only for a frozen agent
    (no other fixed policy reads them, and drawing first trains the same, bit for bit)."""
    try:
        mixer = policy_mixer(policy)
    except ValueError as e:
        raise ConfigError(f"config key 'policy': {e}") from e
    every = cfg.env.counterfactual_every or 0
    return dataclasses.replace(
        cfg,
        policy=policy,
        mix=dataclasses.replace(cfg.mix, mixer=mixer),
        env=dataclasses.replace(
            cfg.env,
            counterfactual_every=every,
            partner_first=cfg.env.partner_first and policy == "agent",
        ),
    )


def policy_options(cfg: Config) -> dict[str, Any]:
    """The constructor options of ``cfg.policy`` from the config."""
    if cfg.policy == "constant":
        return {"q": cfg.constant_topk}
    if cfg.policy == "agent":
        return {
            "path": cfg.frozen_agent.path,
            "deterministic": cfg.frozen_agent.deterministic,
            "partner_first": cfg.env.partner_first,
        }
    return {}


def train_fixed(
    cfg: Config, *, resume: bool = False, progress: bool = True, stop_after: int | None = None
) -> dict[str, Any]:
    """Run ``cfg.policy`` for ``cfg.trainer.epochs`` epochs (or until epoch ``stop_after``);
    returns the metrics dict."""
    cfg = resolve_fixed_config(cfg, cfg.policy)
    run = Run(cfg, resume=resume, progress=progress)
    policy = None

    def build() -> None:  # on rank 0; an error (a frozen agent's file) reaches every rank
        nonlocal policy
        options = policy_options(cfg)
        policy = make_policy(cfg.policy, run.venv.action_space, seed=cfg.seed, **options)
        if run.resumed:
            run.restore("policy", policy.load_state_dict)

    distributed.on_main(build)
    if not run.is_main:
        return run.follow()
    runner = PolicyRunner(policy, run.venv, logger=run.log.sb3_logger())
    return run.drive(
        runner,
        label=LABELS.get(cfg.policy, cfg.policy),
        payload=lambda: {"policy": policy.state_dict()},
        stop_after=stop_after,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    files = ("checkpoint.pt", "accuracy.png")
    return run_command(train_fixed, args, command="rlmix.train", files=files, policy=args.policy)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
