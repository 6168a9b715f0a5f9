"""Train a classifier with a fixed mix-up policy through the environment.

    python -m rlmix.train                        # R-Mix on the embedded default
    python -m rlmix.train --policy cutmix_plus --epochs 10 --out runs/cutmix
    python -m rlmix.train --config cifar100_preactresnet18_rmix --set data.root=/data
    python -m rlmix.train --out runs/x --resume  # continue an interrupted run
    torchrun --nproc_per_node=4 -m rlmix.train --config cifar100_wrn28_10_rmix   # 4 GPUs

The run directory gets ``config.yaml`` (resolved), ``checkpoint.pt`` (each epoch, atomic),
``metrics.json``, ``timings.json`` and TensorBoard logs under ``tb/``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from baselines import list_policies, make_policy, policy_mixer
from envs import DistributedMixupEnv, MixupEnv, follow
from rlmix import distributed
from rlmix.checkpoints import check_writable, load_checkpoint, save_checkpoint
from rlmix.cli import (
    ArgumentParser,
    StopFlag,
    add_config_args,
    add_run_args,
    overrides_from_args,
    run_main,
    run_training,
)
from rlmix.config import Config, load_config, save_config
from rlmix.errors import ConfigError, RlmixError
from rlmix.runlog import EpochStats, RunLog


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m rlmix.train",
        description="Train a classifier with a fixed mix-up policy (R-Mix, CutMix+, Mixup, "
        "constant top-k, vanilla) through the rlmix environment.",
    )
    add_config_args(p)
    p.add_argument(
        "--policy", choices=list_policies(), help="fixed policy (config key: policy; default rmix)"
    )
    p.add_argument("--reward", help="reward logged per step (env.reward), e.g. grad_cosine, none")
    add_run_args(p)
    return p


def resolve_fixed_config(cfg: Config, policy: str) -> Config:
    """The config with ``policy`` set and the mixer it needs."""
    try:
        mixer = policy_mixer(policy)
    except ValueError as e:
        raise ConfigError(f"config key 'policy': {e}") from e
    return dataclasses.replace(cfg, policy=policy, mix=dataclasses.replace(cfg.mix, mixer=mixer))


def train_fixed(
    cfg: Config, *, resume: bool = False, progress: bool = True, stop_after: int | None = None
) -> dict[str, Any]:
    """Run ``cfg.policy`` for ``cfg.trainer.epochs`` epochs (or until epoch ``stop_after``);
    returns the metrics dict."""
    cfg = resolve_fixed_config(cfg, cfg.policy)
    out = Path(cfg.out)
    ckpt_path = out / "checkpoint.pt"
    state = open_run(cfg, resume)
    env = MixupEnv(cfg)
    if state is not None:
        env.load_state_dict(state["env"])
    if not distributed.current().is_main:
        with StopFlag():  # rank 0 decides when to stop
            return {"exit_code": follow(env)}
    if distributed.current().enabled:
        env = DistributedMixupEnv(env)
    policy_kwargs = {"q": cfg.constant_topk} if cfg.policy == "constant" else {}
    policy = make_policy(cfg.policy, env.action_space, seed=cfg.seed, **policy_kwargs)
    log = RunLog(out)
    if state is not None:
        policy.load_state_dict(state["policy"])
        log.history, log.timings = list(state["history"]), list(state["timings"])
    save_config(cfg, out / "config.yaml")
    t = env.trainer
    extra = {"policy": cfg.policy, "reward": cfg.env.reward, "seed": cfg.seed}
    code = 1
    try:
        with StopFlag() as stop:
            while t.epoch < min(cfg.trainer.epochs, stop_after or cfg.trainer.epochs):
                epoch = t.epoch + 1
                obs, _ = env.reset()
                stats = EpochStats()
                bar = tqdm(
                    total=t.steps_per_epoch,
                    desc=f"epoch {epoch}/{cfg.trainer.epochs}",
                    disable=not progress,
                    leave=False,
                )
                truncated = False
                while not truncated:
                    stop.check()
                    action, _ = policy.predict(obs)
                    obs, reward, _, truncated, info = env.step(action)
                    stats.add(info, reward, action if cfg.mix.mixer == "rmix" else None)
                    log.scalar("charts/lr", info["lr"], t.global_step)
                    bar.update()
                    bar.set_postfix(loss=f"{info['train_loss']:.3f}")
                bar.close()
                row = log.end_epoch(epoch, stats, info, t.global_step, cfg.mix.k)
                save_checkpoint(
                    ckpt_path,
                    {
                        "config": cfg.to_dict(),
                        "env": env.state_dict(),
                        "policy": policy.state_dict(),
                        "history": log.history,
                        "timings": log.timings,
                    },
                )
                log.write(extra)
                if progress:
                    tqdm.write(format_row(row))
        code = 0
    except RlmixError as e:
        code = e.exit_code
        raise
    finally:
        if isinstance(env, DistributedMixupEnv):
            env.close(code)
        log.close()
    log.write(extra)
    return {**extra, "final": log.history[-1] if log.history else {}, "epochs": log.history}


def open_run(cfg: Config, resume: bool) -> dict[str, Any] | None:
    """On rank 0: check that ``cfg.out`` is writable and, with ``resume``, read its checkpoint
    (refused if written with another config). Every rank gets the checkpoint state or the error."""

    def read() -> dict[str, Any] | None:
        out = check_writable(cfg.out)
        return load_checkpoint(out / "checkpoint.pt", config=cfg.to_dict()) if resume else None

    return distributed.on_main(read)


def format_row(row: dict[str, float]) -> str:
    """One line per epoch for the console."""
    parts = [f"epoch {int(row['epoch'])}", f"loss {row['train_loss']:.4f}"]
    for key, label in (("top1", "top1"), ("ece", "ECE"), ("fgsm_error", "FGSM err")):
        if key in row:
            parts.append(f"{label} {100 * row[key]:.2f}%")
    parts.append(f"reward {row['reward']:.4f}")
    return " | ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_config(
        args.config, overrides_from_args(args, policy=args.policy, **{"env.reward": args.reward})
    )
    metrics = run_training(train_fixed, cfg, args)
    if "exit_code" in metrics:  # a follower rank: rank 0 reports
        return metrics["exit_code"]
    final = metrics["final"]
    print(
        f"done: {cfg.policy}, final test top-1 {100 * final.get('top1', float('nan')):.2f}%, "
        f"results in {Path(cfg.out) / 'metrics.json'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
