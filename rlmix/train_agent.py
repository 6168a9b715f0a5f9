"""RL-Mix: train a PPO agent that picks each image's R-Mix top-k while the classifier trains.

    python -m rlmix.train_agent                  # the embedded default, a few minutes on a CPU
    python -m rlmix.train_agent --reward grad_cosine_mean --epochs 6
    python -m rlmix.train_agent --config cifar100_preactresnet18_rlmix   # the paper's setting
    python -m rlmix.train_agent --out runs/default --resume
    torchrun --nproc_per_node=4 -m rlmix.train_agent --config cifar100_preactresnet18_rlmix

One env episode is one classifier epoch; PPO learns online. The run directory gets
``config.yaml``, ``checkpoint.pt`` (classifier, optimiser, schedule and agent together, atomic,
at epoch boundaries), ``agent.zip`` (the agent alone, loadable with ``PPO.load``),
``metrics.json``, ``timings.json``, ``accuracy.png`` and TensorBoard logs under ``tb/``
(classifier metrics under ``charts/`` and ``test/``, PPO's under ``train/``: approx_kl,
clip_fraction, entropy_loss...).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.logger import configure
from tqdm.auto import tqdm

from agents.callbacks import EpochCallback
from agents.ppo import agent_from_bytes, agent_to_bytes, make_ppo
from envs import DistributedMixupEnv, MixupEnv, follow
from rlmix import distributed
from rlmix.checkpoints import atomic_write, save_checkpoint
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
from rlmix.plots import plot_curves
from rlmix.runlog import RunLog
from rlmix.train import format_row, open_run


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m rlmix.train_agent",
        description="RL-Mix: train a PPO agent (Stable-Baselines3) that chooses, per image, the "
        "saliency percentile at which R-Mix splits it, while the classifier trains. With no "
        "arguments it runs the embedded default (generated shapes dataset, small ResNet).",
    )
    add_config_args(p)
    p.add_argument(
        "--reward",
        help="reward name (env.reward): grad_cosine (paper), "
        "grad_cosine_mean, loss_drop, test_acc_gain, or module:function",
    )
    add_run_args(p)
    return p


def agent_config(cfg: Config) -> Config:
    """The agent always sees real saliency and mixes with R-Mix."""
    return dataclasses.replace(
        cfg,
        policy="agent",
        mix=dataclasses.replace(cfg.mix, mixer="rmix"),
        env=dataclasses.replace(cfg.env, observe="always"),
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
    log = RunLog(out)
    if state is not None:
        try:
            model = agent_from_bytes(state["agent"], env)
            np.random.set_state(_np_state_from(state["np_random"]))  # noqa: NPY002 (SB3 shuffles with it)
        except Exception as e:  # SB3 raises many types for damaged zips
            raise ConfigError(
                f"checkpoint '{ckpt_path}' holds no usable agent ({type(e).__name__}: {e}); "
                "was it written by rlmix.train_agent?"
            ) from e
        log.history, log.timings = list(state["history"]), list(state["timings"])
    else:
        model = make_ppo(env, cfg)
    model.set_logger(configure(str(out / "tb"), ["tensorboard"]))
    save_config(cfg, out / "config.yaml")
    t = env.trainer
    extra = {"policy": "agent", "reward": cfg.env.reward, "seed": cfg.seed}

    def save() -> None:
        save_checkpoint(
            ckpt_path,
            {
                "config": cfg.to_dict(),
                "env": env.state_dict(),
                "agent": agent_to_bytes(model),
                "np_random": _np_state_to(np.random.get_state()),  # noqa: NPY002
                "history": log.history,
                "timings": log.timings,
            },
        )
        atomic_write(out / "agent.zip", model.save)
        log.write(extra)

    def on_epoch(row: dict[str, float]) -> None:
        if progress:
            tqdm.write(format_row(row))

    last = min(cfg.trainer.epochs, stop_after or cfg.trainer.epochs)
    remaining = max(0, last - t.epoch) * t.steps_per_epoch
    code = 1
    try:
        with StopFlag() as stop:
            callback = EpochCallback(env, log, save, on_epoch, stop=stop, progress=progress)
            if remaining > 0:
                model.learn(
                    total_timesteps=remaining, callback=callback, reset_num_timesteps=state is None
                )
            stop.check()
        code = 0
    except RlmixError as e:
        code = e.exit_code
        raise
    finally:
        if isinstance(env, DistributedMixupEnv):
            env.close(code)
        log.close()
    log.write(extra)
    if log.history:
        plot_curves({"RL-Mix": [log.history]}, out / "accuracy.png")
    return {**extra, "final": log.history[-1] if log.history else {}, "epochs": log.history}


def _np_state_to(state: tuple) -> dict[str, Any]:
    import torch

    name, keys, pos, has_gauss, cached = state
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def _np_state_from(d: dict[str, Any]) -> tuple:
    return (d["name"], d["keys"].numpy().astype(np.uint32), d["pos"], d["has_gauss"], d["cached"])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_config(args.config, overrides_from_args(args, **{"env.reward": args.reward}))
    start = time.perf_counter()
    metrics = run_training(train_agent, cfg, args)
    if "exit_code" in metrics:  # a follower rank: rank 0 reports
        return metrics["exit_code"]
    wall = time.perf_counter() - start
    final = metrics["final"]
    if not final:
        raise ConfigError("nothing to do: the run already has all its epochs")
    rewards = [row["reward"] for row in metrics["epochs"]]
    out = Path(cfg.out)
    print()
    print("RL-Mix finished")
    print(f"  final test top-1   {100 * final.get('top1', float('nan')):6.2f} %")
    print(f"  final test ECE     {100 * final.get('ece', float('nan')):6.2f} %")
    if "fgsm_error" in final:
        print(f"  FGSM error         {100 * final['fgsm_error']:6.2f} %")
    print(f"  mean reward        {np.mean(rewards):9.4f}  ({cfg.env.reward})")
    print(f"  wall time          {wall:6.1f} s")
    print(f"  metrics            {out / 'metrics.json'}")
    print(f"  checkpoint, agent  {out / 'checkpoint.pt'}, {out / 'agent.zip'}")
    print(f"  plot               {out / 'accuracy.png'}")
    print(f"  TensorBoard        tensorboard --logdir {out / 'tb'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
