"""Run under ``torchrun`` by tests/test_distributed.py, which holds the assertions:
``dist_worker.py SCENARIO OUT_DIR [ARGS]``; each rank records what it saw.

Scenarios:
  checks OUT DATA  distributed evaluation vs one process, GlobalBatchNorm2d vs BatchNorm2d, and
                   the observation gather / action scatter of DistributedMixupEnv; each rank
                   writes OUT/checks_<rank>.pt.
  agent OUT ARGS   ``rlmix.train_agent`` with ARGS, where every rank but 0 refuses to build PPO.
  learned OUT DATA a DDP loop with agents.LearnedMix; each rank writes OUT/learned_<rank>.pt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

import agents.ppo
import envs.distributed_env as denv
import rlmix.train_agent
from envs import DistributedMixupEnv, MixupEnv, follow
from rlmix import distributed
from rlmix.cli import run_main
from rlmix.config import load_config
from rlmix.data import BatchLoader
from rlmix.metrics import evaluate
from rlmix.sync_batchnorm import GlobalBatchNorm2d

TINY = {
    "data": {"name": "shapes", "options": {"train_size": 400, "test_size": 130}},
    "model": {"name": "resnet_tiny"},
    "trainer": {"epochs": 1, "batch_size": 50},
    "env": {"observe": "always", "eval_every": 1, "counterfactual_every": 1},
    "mix": {"mixer": "rmix"},
}


def check_batchnorm(d: distributed.Dist) -> dict[str, torch.Tensor]:
    """GlobalBatchNorm2d on shards == BatchNorm2d on the whole batch (outputs and gradients)."""
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5) * 3 + 1
    w = torch.randn(8, 3, 5, 5)
    ref = torch.nn.BatchNorm2d(3)
    ref.weight.data.uniform_(0.5, 1.5)
    ref.bias.data.uniform_(-0.5, 0.5)
    sync = GlobalBatchNorm2d(3)
    sync.load_state_dict(ref.state_dict())
    xr = x.clone().requires_grad_(True)
    yr = ref(xr)
    (yr * w).sum().backward()
    shard = slice(d.rank, None, d.world_size)
    xs = x[shard].clone().requires_grad_(True)
    out = sync(xs)
    (out * w[shard]).sum().backward()
    return {
        "bn_out": out.detach(),
        "bn_out_ref": yr.detach()[shard],
        "bn_xgrad": xs.grad,
        "bn_xgrad_ref": xr.grad[shard],
        "bn_wgrad": distributed.all_reduce_mean(sync.weight.grad) * d.world_size,
        "bn_wgrad_ref": ref.weight.grad,
        "bn_running_var": sync.running_var.clone(),
        "bn_running_var_ref": ref.running_var.clone(),
    }


def checks(out: Path, data_root: str) -> None:
    d = distributed.setup()
    cfg = load_config({**TINY, "data": {**TINY["data"], "root": data_root}, "out": str(out)})
    result: dict[str, object] = check_batchnorm(d)
    env = MixupEnv(cfg)
    t = env.trainer
    result["eval"] = t.evaluate()
    if d.is_main:
        full = BatchLoader(
            t.test_loader.data, 50, shuffle=False, drop_last=False, augment=False, with_boxes=True
        )
        result["eval_single"] = evaluate(t.model, full)
    local_obs: list[np.ndarray] = []
    local_actions: list[np.ndarray] = []
    pack, step = denv._pack, MixupEnv.step

    def recording_pack(obs, *columns):
        local_obs.append(pack(obs, *columns).numpy().copy())
        return pack(obs, *columns)

    def recording_step(self, action):
        local_actions.append(np.asarray(action).copy())
        return step(self, action)

    denv._pack = recording_pack
    MixupEnv.step = recording_step
    if d.is_main:
        e = DistributedMixupEnv(env)
        obs0, _ = e.reset(seed=3)
        action = np.arange(cfg.trainer.batch_size) % cfg.mix.k
        obs1, reward, _, _, info = e.step(action)
        e.close(0)
        result.update(
            global_obs=[pack(o).numpy() for o in (obs0, obs1)],
            global_action=action,
            reward=reward,
            reward_per_image=info["reward_per_image"],
            counterfactual_per_image=info["counterfactual_per_image"],
            gain=info["policy_gain/grad_cosine"],
            spaces=(e.observation_space["logits"].shape, e.action_space.shape),
        )
    else:
        result["exit"] = follow(env)
    result.update(local_obs=local_obs, local_actions=local_actions, rank=d.rank)
    torch.save(result, out / f"checks_{d.rank}.pt")
    distributed.teardown()


def learned(out: Path, data_root: str) -> None:
    """A user's DDP loop with :class:`agents.LearnedMix` (partner-aware ``teach``): each rank
    records the policy's weights after every PPO update and its per-epoch rows."""
    from torch.nn.parallel import DistributedDataParallel

    from agents import LearnedMix
    from rlmix.data.pipeline import build_loaders
    from rlmix.losses import soft_ce
    from rlmix.models import create_model
    from rlmix.optim import build_optimizer

    d = distributed.setup()
    cfg = load_config(
        {
            **TINY,
            "data": {**TINY["data"], "root": data_root},
            "trainer": {"epochs": 2, "batch_size": 50},
            "env": {"reward": "teach", "partner_first": True, "counterfactual_every": 2},
            "agent": {"n_steps": 4, "batch_size": 100, "n_epochs": 2},
        }
    )
    loaders = build_loaders(
        cfg.data, batch_size=50, seed=0, device=torch.device("cpu"), rank=d.rank, world_size=2
    )
    torch.manual_seed(0)
    model = create_model("resnet_tiny", 10, image_size=32)
    net = DistributedDataParallel(model)
    steps = len(loaders.train)
    optimizer, scheduler = build_optimizer(model, cfg.trainer, 2 * steps)
    mix = LearnedMix(
        10, config=cfg, steps_per_epoch=steps, total_steps=2 * steps, optimizer=optimizer
    )
    snapshots, shapes = [], []
    for epoch in range(2):
        loaders.train.set_epoch(epoch)
        for x, y in loaders.train:
            x_mix, y_mix = mix(net, x, y)
            shapes.append(tuple(x_mix.shape))
            logits = net(x_mix)
            loss = soft_ce(logits, y_mix)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            updates = mix.ppo._n_updates
            mix.observe(logits)
            if mix.ppo._n_updates != updates:
                snapshots.append({k: v.clone() for k, v in mix.ppo.policy.state_dict().items()})
    result = {"snapshots": snapshots, "history": mix.history, "shapes": shapes, "rank": d.rank}
    torch.save(result, out / f"learned_{d.rank}.pt")
    distributed.teardown()


def agent(argv: list[str]) -> int:
    distributed.setup()
    if not distributed.current().is_main:

        def refuse(*args, **kwargs):
            raise AssertionError(f"rank {distributed.current().rank} built a PPO model")

        agents.ppo.PPO.__init__ = refuse
        rlmix.train_agent.make_ppo = refuse
        rlmix.train_agent.agent_from_bytes = refuse
    return run_main(rlmix.train_agent.main, argv)


if __name__ == "__main__":
    scenario, out = sys.argv[1], Path(sys.argv[2])
    if scenario == "checks":
        checks(out, sys.argv[3])
    elif scenario == "agent":
        raise SystemExit(agent(sys.argv[3:]))
    elif scenario == "learned":
        learned(out, sys.argv[3])
    else:
        raise SystemExit(f"unknown scenario {scenario}")
