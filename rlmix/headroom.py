"""Reward headroom without PPO: could any per-image policy beat random top-k on a reward?

    python -m rlmix.headroom --reward val_grad_align                  # the embedded default
    python -m rlmix.headroom --config fashion_mnist_study --reward grad_cosine_mean \\
        --reward val_grad_align --at 50 100 150 200 --images 15000
    python -m rlmix.headroom --reward probe_rank --observations own,partner

Trains the classifier with a fixed policy (``--policy``, R-Mix by default) and, after each epoch
of ``--at``, freezes it and scores every one of the K top-k values for every image of
``--images`` fresh training batches, on the same state: the same batch, saliency, lam, partners
and grid, the same weights, nothing changed (the same-batch counterfactual of
:meth:`envs.MixupEnv.score`, K ways; each image's partner keeps a random top-k, as under R-Mix).
From those tables (:mod:`rlmix.policy_fit`) it reports, per reward and observation, the gain
over random top-k of

- the **best constant** top-k (chosen on half of the batches, scored on the other half), taken
  by one image (its partner keeping a random top-k: the credit a per-image reward gives one
  decision) and by every image of the batch (the world of a constant policy, which is what the
  same-batch policy gain of a run measures),
- an **oracle** that picks each image's best top-k (what a reward offers at most), and
- a policy **fitted offline** on half of the images to what it observes and scored on the
  other half (the **learnable** headroom: what an agent can reach from its observation),

with 95 % intervals over the scored batches. ``--observations`` compares what the policy sees:
``own`` is the agent's slot observation (pooled saliency, a logits summary, the batch context);
``partner`` adds the partner's saliency and logits summary, the image's lam and the batch's grid,
as if they were drawn before the action.

Writes under ``--out``: ``headroom.md`` (the table), ``headroom.json`` (``best_constant_gain``,
``oracle_gain``, ``learnable_gain`` and their ``_ci`` for the first reward and observation over
all points, and every row under ``rows``), ``headroom.png``, and the training run in ``train/``
and each point's scores in ``scores_epoch<N>.pt`` (an interrupted headroom run continues with
``--resume``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from agents.policy import logits_summary
from baselines import list_policies
from envs import MixupEnv
from envs.rewards import reward_for
from envs.slots import slot_context
from rlmix.checkpoints import load_checkpoint
from rlmix.cli import ArgumentParser, add_config_args, overrides_from_args, run_main
from rlmix.config import Config, load_config
from rlmix.errors import ConfigError
from rlmix.io import atomic_write, atomic_write_json, atomic_write_text
from rlmix.plots import plot_headroom
from rlmix.policy_fit import Gains, headroom_gains
from rlmix.probe import preserved
from rlmix.seeding import derive_seed, stream_generator
from rlmix.train import train_fixed

OBSERVATIONS = ("own", "partner")
KEYS = (
    "best_constant",
    "best_constant_everyone",
    "oracle",
    "learnable",
    "learnable_linear",
    "learnable_mlp",
)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m rlmix.headroom",
        description="Score every top-k of every image on the same states of a classifier "
        "trained with a fixed policy, and report how much a per-image policy could gain over "
        "random top-k on each reward: the best constant, an oracle, and a policy fitted "
        "offline to its observation (no PPO).",
    )
    add_config_args(p)
    p.set_defaults(out="runs/headroom")
    p.add_argument(
        "--reward",
        action="append",
        required=True,
        help="reward to score (repeatable; rewards with a counterfactual only)",
    )
    p.add_argument(
        "--policy",
        default="rmix",
        choices=[p for p in list_policies() if p != "agent"],
        help="fixed policy that trains the classifier (default rmix)",
    )
    p.add_argument(
        "--at",
        type=int,
        nargs="+",
        help="epochs after which to score (default: 4 points, evenly spaced to the last epoch)",
    )
    p.add_argument(
        "--images", type=int, default=5000, help="images scored at each point (default 5000)"
    )
    p.add_argument(
        "--observations",
        default="own,partner",
        help=f"comma-separated observation variants: {', '.join(OBSERVATIONS)} (default both)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted headroom run in --out"
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


# -- scoring ----------------------------------------------------------------------------------------


def _features(
    env: MixupEnv, obs: dict[str, np.ndarray], perm: torch.Tensor, lam: torch.Tensor, grid: int
):
    """The observation variants' features (B, d) of one batch: ``own`` is what the agent's
    :class:`agents.policy.SlotExtractor` takes in; ``partner`` adds the partner's, the image's
    lam (``lam`` (B,), :attr:`rlmix.mixing.MixParams.lam_per_image`) and the batch's grid."""
    t = env.trainer
    sal = torch.from_numpy(obs["saliency"]).double().flatten(1)
    g2 = sal.shape[1]
    logits = torch.from_numpy(obs["logits"]).double()
    context = torch.from_numpy(
        slot_context(obs["saliency"], obs["logits"], t.progress, t.lr / env.cfg.trainer.lr_max)
    ).double()
    own = torch.cat([torch.log1p(sal * g2), logits_summary(logits), context], 1)
    batch = torch.stack((lam, torch.full_like(lam, 1.0 / grid)), dim=1)
    partner = torch.cat([own, own[perm.cpu(), : own.shape[1] - context.shape[1]], batch], 1)
    return {"own": own, "partner": partner}


def score_point(
    env: MixupEnv, images: int, seed: int, *, progress: bool = False, desc: str = ""
) -> dict[str, Any]:
    """Score all K top-k of ``images`` training images on the env's current state.

    Batches come from the training set with their own seed (order, augmentation, lam, partners,
    grid and the partners' random top-k), and every batch starts from the same weights and
    BatchNorm statistics. Returns ``rewards`` (name -> (n, K): image i at top-k a, its partner at
    its random one), ``everyone`` (name -> (n, K): every image of the batch at top-k a, the world
    of a constant policy), ``features`` (variant -> (n, d)) and ``batch`` (n,).
    """
    t, k = env.trainer, env.cfg.mix.k
    rewards: dict[str, list[torch.Tensor]] = {r.name: [] for r in env.counterfactual_rewards}
    everyone: dict[str, list[torch.Tensor]] = {r.name: [] for r in env.counterfactual_rewards}
    features: dict[str, list[torch.Tensor]] = {v: [] for v in OBSERVATIONS}
    batches: list[torch.Tensor] = []
    partner_stream = stream_generator(seed, "counterfactual", 0)
    n_batches = max(4, math.ceil(images / env.action_space.shape[0]))
    round_ = 0
    with tqdm(total=n_batches, desc=desc, disable=not progress, leave=False) as bar:
        while len(batches) < n_batches:
            t.begin_epoch(derive_seed(seed, "headroom", round_))  # a fresh pass over the data
            round_ += 1
            for _ in range(min(t.steps_per_epoch, n_batches - len(batches))):
                with preserved(t.model):  # every batch scored on the same state
                    table = _score_batch(env, k, partner_stream)
                for name, values in table["rewards"].items():
                    rewards[name].append(values)
                    everyone[name].append(table["everyone"][name])
                for variant, x in table["features"].items():
                    features[variant].append(x)
                batches.append(torch.full((table["size"],), len(batches)))
                bar.update()
            t.end_epoch()
    return {
        "rewards": {n: torch.cat(v) for n, v in rewards.items()},
        "everyone": {n: torch.cat(v) for n, v in everyone.items()},
        "features": {n: torch.cat(v) for n, v in features.items()},
        "batch": torch.cat(batches),
    }


def _score_batch(env: MixupEnv, k: int, partner_stream: torch.Generator) -> dict[str, Any]:
    t = env.trainer
    env._batch = batch = t.observe(saliency=True)
    b = batch.x.shape[0]
    params = t.mixer.sample(batch.x, t.generator)
    partner_action = torch.randint(k, (b,), generator=partner_stream)
    state = env._state_inputs()
    names = [r.name for r in env.counterfactual_rewards]
    table = {n: torch.empty(b, k, dtype=torch.float64) for n in names}
    everyone = {n: torch.empty(b, k, dtype=torch.float64) for n in names}
    for a in range(k):
        action = torch.full((b,), a)
        alone = env.score(
            env.mix_inputs(params, action, partner_action=partner_action, state=state)
        )
        together = env.score(env.mix_inputs(params, action, state=state))
        for name in names:
            table[name][:, a] = torch.from_numpy(alone[name])
            everyone[name][:, a] = torch.from_numpy(together[name])
    obs = env._observation(batch)
    feats = _features(env, obs, params.perm, params.lam_per_image, params.grid)
    return {"rewards": table, "everyone": everyone, "features": feats, "size": b}


# -- the command ------------------------------------------------------------------------------------


def points_of(cfg: Config, at: Sequence[int] | None) -> list[int]:
    """The epochs to score after: ``at``, or four evenly spaced ones ending at the last."""
    epochs = cfg.trainer.epochs
    points = sorted(set(at)) if at else sorted({max(1, round(epochs * i / 4)) for i in range(1, 5)})
    bad = [p for p in points if not 1 <= p <= epochs]
    if bad:
        raise ConfigError(f"--at: epoch {bad[0]} is not in [1, trainer.epochs={epochs}]")
    return points


def _configs(cfg: Config, rewards: list[str], policy: str) -> tuple[Config, Config]:
    """The training run's config (no reward to pay, the held-out split and the EMA teacher of
    the scored rewards kept) and the scoring env's (the scored rewards, the same split)."""
    scored = []
    for name in rewards:
        reward = reward_for(name, "--reward")
        if not reward.has_counterfactual:
            raise ConfigError(
                f"--reward {name} needs the step's outcome, so no action can be scored without "
                "taking it: choose a reward with a counterfactual"
            )
        scored.append(reward)
    hold_out = "always" if any(r.held_out for r in scored) else cfg.data.hold_out
    data = dataclasses.replace(cfg.data, hold_out=hold_out)
    teachers = [r.name for r in scored if r.teacher]
    train_env = dataclasses.replace(cfg.env, reward="none", log_rewards=teachers)
    train_cfg = dataclasses.replace(
        cfg, policy=policy, data=data, env=train_env, out=str(Path(cfg.out) / "train")
    )
    score_env = dataclasses.replace(
        cfg.env, reward=rewards[0], log_rewards=rewards[1:], counterfactual_every=0
    )
    score_cfg = dataclasses.replace(
        train_cfg, env=score_env, mix=dataclasses.replace(cfg.mix, mixer="rmix")
    )
    return train_cfg, score_cfg


def _row(reward: str, variant: str, point: str, gains: Gains, images: int) -> dict[str, Any]:
    row: dict[str, Any] = {"reward": reward, "observation": variant, "at": point, "images": images}
    for key in KEYS:
        d = getattr(gains, key)
        row[f"{key}_gain"] = d.mean
        row[f"{key}_gain_ci"] = [d.low, d.high]
    row["best_constant_q"] = gains.best_action
    row["best_constant_everyone_q"] = gains.best_action_everyone
    row["learnable_model"] = gains.model
    oracle = gains.oracle.mean
    row["learnable_fraction_of_oracle"] = gains.learnable.mean / oracle if oracle > 0 else math.nan
    return row


def headroom(
    cfg: Config,
    rewards: list[str],
    *,
    policy: str = "rmix",
    at: Sequence[int] | None = None,
    images: int = 5000,
    observations: Sequence[str] = OBSERVATIONS,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, score at each point, fit; write the table, JSON and plot. Returns the JSON."""
    if images < 1:
        raise ConfigError(f"--images must be >= 1 (got {images})")
    bad = [v for v in observations if v not in OBSERVATIONS]
    if bad or not observations:
        raise ConfigError(
            f"--observations: unknown variant '{bad[0] if bad else ''}'; choose from "
            f"{', '.join(OBSERVATIONS)}"
        )
    points = points_of(cfg, at)
    train_cfg, score_cfg = _configs(cfg, rewards, policy)
    out, ckpt = Path(cfg.out), Path(train_cfg.out) / "checkpoint.pt"
    start = time.perf_counter()
    done = int(load_checkpoint(ckpt)["env"]["trainer"]["epoch"]) if resume and ckpt.is_file() else 0
    tables: list[tuple[int, dict[str, Any]]] = []
    for point in points:
        saved = out / f"scores_epoch{point}.pt"
        if resume and saved.is_file():
            tables.append((point, torch.load(saved, weights_only=True)))
            continue
        if done > point:
            raise ConfigError(
                f"'{ckpt}' is at epoch {done}, past the point {point} whose scores are missing: "
                "start headroom in a new --out"
            )
        if done < point:
            train_fixed(train_cfg, resume=done > 0, progress=progress, stop_after=point)
            done = point
        env = MixupEnv(score_cfg)
        env.load_state_dict(load_checkpoint(ckpt)["env"])
        seed = derive_seed(cfg.seed, "headroom-point", point)
        table = score_point(env, images, seed, progress=progress, desc=f"score epoch {point}")
        atomic_write(saved, lambda f, table=table: torch.save(table, f))
        tables.append((point, table))
    rows = []
    for reward in rewards:
        for variant in observations:
            pooled = _pool([t for _, t in tables], reward, variant)
            for point, table in tables:
                gains = headroom_gains(
                    table["rewards"][reward],
                    table["features"][variant],
                    table["batch"],
                    everyone=table["everyone"][reward],
                )
                rows.append(_row(reward, variant, str(point), gains, len(table["batch"])))
            gains = headroom_gains(*pooled[:3], everyone=pooled[3])
            rows.append(_row(reward, variant, "all", gains, len(pooled[2])))
    head = next(r for r in rows if r["at"] == "all")
    result = {
        **{k: head[k] for k in head if k.endswith(("_gain", "_gain_ci"))},
        "reward": rewards[0],
        "observation": observations[0],
        "points": points,
        "policy": policy,
        "seconds": time.perf_counter() - start,
        "rows": rows,
    }
    atomic_write_json(out / "headroom.json", result)
    atomic_write_text(out / "headroom.md", to_markdown(rows, cfg, policy))
    plot_headroom([r for r in rows if r["at"] == "all"], out / "headroom.png")
    return result


def _pool(tables, reward: str, variant: str):
    """One table of every point's images; batch ids kept distinct across points."""
    offset, rewards, features, batches, everyone = 0, [], [], [], []
    for table in tables:
        rewards.append(table["rewards"][reward])
        everyone.append(table["everyone"][reward])
        features.append(table["features"][variant])
        batches.append(table["batch"] + offset)
        offset += int(table["batch"].max()) + 1
    return torch.cat(rewards), torch.cat(features), torch.cat(batches), torch.cat(everyone)


def _ci(row: dict[str, Any], key: str) -> str:
    low, high = row[f"{key}_gain_ci"]
    mark = "*" if low > 1e-9 or high < -1e-9 else ""  # not a numerically-zero interval
    return f"{row[f'{key}_gain']:+.4f} [{low:+.4f}, {high:+.4f}]{mark}"


def to_markdown(rows: list[dict[str, Any]], cfg: Config, policy: str) -> str:
    lines = [
        f"## Reward headroom: {cfg.data.name} / {cfg.model.name}, trained with {policy}",
        "",
        "| reward | observation | after epoch | images | best constant, one image (q) | "
        "best constant, every image (q) | oracle | learnable (model) | learnable / oracle |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    space = np.linspace(0, 0.99, cfg.mix.k)
    for r in rows:
        q = f"{float(space[r['best_constant_q']]):.2f}"
        q_all = f"{float(space[r['best_constant_everyone_q']]):.2f}"
        lines.append(
            f"| {r['reward']} | {r['observation']} | {r['at']} | {r['images']} | "
            f"{_ci(r, 'best_constant')} ({q}) | {_ci(r, 'best_constant_everyone')} ({q_all}) | "
            f"{_ci(r, 'oracle')} | "
            f"{_ci(r, 'learnable')} ({r['learnable_model']}) | "
            f"{100 * r['learnable_fraction_of_oracle']:.1f} % |"
        )
    lines += [
        "",
        "Gains over random top-k on the same states (reward minus its mean over the K top-k), "
        "with 95 % Student-t intervals over the scored batches (* when they exclude 0). One "
        "image: the image takes the top-k, its partner keeps a random one (the credit a "
        "per-image reward gives one decision); every image: the whole batch takes it (what a "
        "constant policy gains, as the same-batch policy gain measures it). Best constants and "
        "the learnable policy are chosen or fitted on half of the batches and scored on the "
        "other half.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_config(args.config, overrides_from_args(args))
    observations = [v.strip() for v in args.observations.split(",") if v.strip()]
    result = headroom(
        cfg,
        args.reward,
        policy=args.policy,
        at=args.at,
        images=args.images,
        observations=observations,
        resume=args.resume,
        progress=not args.no_progress,
    )
    print(to_markdown(result["rows"], cfg, args.policy))
    out = Path(cfg.out)
    print(f"table: {out / 'headroom.md'}, {out / 'headroom.json'}; plot: {out / 'headroom.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
