"""What each reward costs an environment step: median step time per reward, in one process.

    python -m benchmarks.bench_rewards                     # the embedded default, 40 rounds
    python -m benchmarks.bench_rewards --rewards teach,grad_cosine --repeats 80

One environment per reward (the embedded default: shapes, resnet_tiny, batch 100, R-Mix),
stepped with random top-k in turn, one step each per round, so that the machine's noise falls
on every reward alike; steps that end an epoch are not timed. Each reward is timed without the
same-batch counterfactual (what the reward itself reads) and with it every step (what an agent
learning from it, or reporting its gain on every step, pays). ``none`` is the step with no
reward: the ratios are to it.

Target: ``teach``, the default reward, with its counterfactual every step costs at most 1.8x a
step without reward.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import torch

from benchmarks import common
from envs.mixup_env import MixupEnv
from envs.rewards import get_reward
from rlmix.config import Config, load_config

NAME = "rewards"
LIMIT = 1.8  # teach with its counterfactual / a step without reward


def build_parser() -> argparse.ArgumentParser:
    p = common.env_parser(
        "bench_rewards",
        "Median environment step time for each reward, without and with the same-batch "
        "counterfactual, alternating in one process.",
        models="resnet_tiny",
        repeats=40,
        warmup=3,
        amp=True,
        repeats_help="(here: timed rounds, one step of every reward each; default 40)",
        warmup_help="(untimed rounds first; default 3)",
    )
    p.add_argument(
        "--rewards",
        default="grad_cosine,hardness,teach,val_grad_align",
        help="comma-separated rewards (default grad_cosine,hardness,teach,val_grad_align)",
    )
    return p


def make_envs(base: Config, rewards: list[str], tmp: str) -> dict[tuple[str, int], MixupEnv]:
    """(reward, counterfactual every step: 0 or 1) -> a reset env of ``base``; ``none`` first."""
    envs = {}
    for reward, every in [("none", 0)] + [(r, e) for e in (0, 1) for r in rewards]:
        overrides = [
            f"out={tmp}/{reward}{every}",
            f"env.reward={reward}",
            f"env.counterfactual_every={every}",
            "env.partner_first=false",
            "env.eval_fgsm=false",
        ]
        if reward != "none" and get_reward(reward).held_out and base.data.val_size == 0:
            overrides.append(f"data.val_size={base.trainer.batch_size}")
        env = MixupEnv(load_config(base.to_dict(), overrides))
        env.reset(seed=0)
        envs[reward, every] = env
    return envs


def time_rewards(envs: dict, rounds: int, warmup: int, device: torch.device) -> dict:
    """(reward, every) -> step times in ms, one step of every env per round in turn; steps that
    end an episode are not timed."""
    timer = common.make_timer(device)
    times: dict = {k: [] for k in envs}
    for i in range(warmup + rounds):
        for key, env in envs.items():
            step = _Step(env)
            ms = timer(step)
            if step.ended:
                env.reset()
            elif i >= warmup:
                times[key].append(ms)
    return times


def run(args: argparse.Namespace, device: torch.device) -> dict:
    print(f"[rewards] {common.header_line(device)}", flush=True)
    rewards = [r.strip() for r in args.rewards.split(",") if r.strip()]
    rows = []
    for model, steps in common.parse_models(args.models):
        with tempfile.TemporaryDirectory(prefix="rlmix-bench-") as tmp:
            base = common.env_config(model, steps, args, device, tmp)
            times = time_rewards(make_envs(base, rewards, tmp), args.repeats, args.warmup, device)
        base_ms = common.median(times["none", 0])
        rows += [
            {
                "model": model,
                "reward": reward,
                "counterfactual": bool(every),
                "ms_per_step": common.median(t),
                "ratio": common.median(t) / base_ms,
                "spread": common.spread(t),
                "steps_timed": len(t),
            }
            for (reward, every), t in times.items()
        ]
    table = common.format_table(
        ("model", "reward", "counterfactual", "ms / step", "x no reward", "spread", "steps"),
        [
            [
                r["model"],
                r["reward"],
                "every step" if r["counterfactual"] else "off",
                f"{r['ms_per_step']:.1f}",
                f"{r['ratio']:.2f}",
                f"{100 * r['spread']:.0f}%",
                r["steps_timed"],
            ]
            for r in rows
        ],  # fmt: skip
        left=3,
    )
    targets = [
        common.Target(f"{r['model']}: teach with its counterfactual / no reward", r["ratio"], LIMIT)
        for r in rows
        if r["reward"] == "teach" and r["counterfactual"]
    ]
    return common.report(NAME, args, device, table, rows, targets)


class _Step:
    """One env step with a random top-k per image (drawn before the timer starts); ``ended``
    says whether it ended the episode."""

    def __init__(self, env: MixupEnv) -> None:
        self.env, self.action, self.ended = env, env.action_space.sample(), False

    def __call__(self) -> None:
        _, _, terminated, truncated, _ = self.env.step(self.action)
        self.ended = terminated or truncated


def execute(argv: list[str] | None = None) -> dict:
    """Parse ``argv``, check it, run the benchmark; returns its results (see :func:`run`)."""
    p, args, device = common.parse_env(build_parser, argv)
    try:
        for reward in (r.strip() for r in args.rewards.split(",") if r.strip()):
            get_reward(reward)
    except ValueError as e:
        p.error(str(e))
    return run(args, device)


main = common.main_of(execute)

if __name__ == "__main__":
    sys.exit(main())
