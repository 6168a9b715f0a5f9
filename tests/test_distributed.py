"""torchrun on the CPU (gloo, 2 processes): sharded training, reduced evaluation, the agent's
gather / scatter, and resuming a 2-rank run on 1 rank."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rlmix.checkpoints import load_checkpoint
from rlmix.cli import run_main
from rlmix.train import main as train_main
from rlmix.train_agent import main as train_agent_main

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(
    *args: str, nproc: int = 2, timeout: float = 300, check: bool = True
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
    }
    cmd = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}", *args,
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert not check or proc.returncode == 0, proc.stderr[-3000:]
    return proc


def fixed_args(data_root: str, out: Path) -> list[str]:
    """Vanilla training, 2 steps of a global batch of 50, BatchNorm over the global batch."""
    return [
        "--policy", "vanilla", "--epochs", "1", "--out", str(out), "--no-progress",
        "--set", f"data.root={data_root}",
        "--set", "data.options={train_size: 100, test_size: 100}", "--set", "data.val_size=0",
        "--set", "trainer.batch_size=50", "--set", "trainer.sync_bn=true",
    ]  # fmt: skip


def test_two_ranks_train_the_same_model_as_one(data_root, tmp_path):
    torchrun("-m", "rlmix.train", *fixed_args(data_root, tmp_path / "two"))
    assert run_main(train_main, fixed_args(data_root, tmp_path / "one")) == 0
    one, two = (
        load_checkpoint(tmp_path / d / "checkpoint.pt")["env"]["trainer"] for d in ("one", "two")
    )
    assert one["global_step"] == two["global_step"] == 2
    assert one["model"].keys() == two["model"].keys()
    for key, a in one["model"].items():
        b = two["model"][key]
        if a.is_floating_point():
            scale = a.abs().max().item() + 1e-8
            assert (a - b).abs().max().item() / scale < 1e-4, key
        else:
            assert torch.equal(a, b), key
    m1, m2 = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert m1["final"]["top1"] == m2["final"]["top1"]
    assert m1["final"]["train_loss"] == pytest.approx(m2["final"]["train_loss"], rel=1e-5)


@pytest.fixture(scope="module")
def checks(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("dist_checks")
    torchrun(str(ROOT / "tests" / "dist_worker.py"), "checks", str(out), data_root)
    return [torch.load(out / f"checks_{r}.pt", weights_only=False) for r in range(2)]


def test_global_batchnorm_equals_batchnorm_on_the_whole_batch(checks):
    for rank in checks:
        for key in ("bn_out", "bn_xgrad", "bn_wgrad", "bn_running_var"):
            torch.testing.assert_close(rank[key], rank[f"{key}_ref"], rtol=1e-5, atol=1e-5)


def test_distributed_evaluation_equals_single_process(checks):
    single = checks[0]["eval_single"]
    assert set(single) == {"top1", "top5", "nll", "ece", "fgsm_error", "loc_acc"}
    for rank in checks:
        assert rank["eval"].keys() == single.keys()
        for key, value in single.items():
            assert rank["eval"][key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_rank0_sees_the_global_batch_and_actions_reach_their_images(checks):
    main, other = checks
    assert main["spaces"] == ((50, 10), (50,))  # global batch, although each rank holds 25
    assert len(main["local_obs"]) == len(other["local_obs"]) == 2  # reset + step
    for step, global_obs in enumerate(main["global_obs"]):
        # saliency, logits, per-image reward and its same-batch counterfactual
        assert global_obs.shape == (50, 64 + 10 + 2)
        for rank in checks:
            local = rank["local_obs"][step]
            np.testing.assert_array_equal(global_obs[rank["rank"] :: 2, :74], local[:, :74])
    for rank in checks:  # each image's rewards come back to their place in the global batch
        local = rank["local_obs"][1]
        shard = slice(rank["rank"], None, 2)
        np.testing.assert_array_equal(main["reward_per_image"][shard], local[:, -2])
        np.testing.assert_array_equal(main["counterfactual_per_image"][shard], local[:, -1])
    assert main["reward"] == pytest.approx(main["reward_per_image"].mean())
    # grad_cosine is batch-level: each rank's gain is its shard's, and rank 0 reports their mean
    assert np.isfinite(main["gain"]) and main["counterfactual_per_image"].std() > 0
    action = main["global_action"]
    assert len(set(action.tolist())) > 1
    for rank in checks:
        (received,) = rank["local_actions"]
        np.testing.assert_array_equal(received, action[rank["rank"] :: 2])
    assert other["exit"] == 0
    assert np.isfinite(main["reward"])


def test_agent_on_two_ranks_resumes_on_one(tiny_cli_args, tmp_path):
    out = tmp_path / "run"
    args = [*tiny_cli_args, "--out", str(out), "--epochs", "2", "--no-progress"]
    worker = str(ROOT / "tests" / "dist_worker.py")
    proc = torchrun(worker, "agent", str(out), *args, "--stop-after-epoch", "1")
    assert proc.stdout.count("agent stopped after epoch 1 of") == 1  # rank 0 reports only
    first = json.loads((out / "metrics.json").read_text())
    assert [row["epoch"] for row in first["epochs"]] == [1.0]
    assert run_main(train_agent_main, [*args, "--resume"]) == 0  # one process now
    resumed = json.loads((out / "metrics.json").read_text())
    assert [row["epoch"] for row in resumed["epochs"]] == [1.0, 2.0]
    assert resumed["epochs"][0] == first["epochs"][0]


def test_an_interrupted_run_stops_every_rank_with_one_line(data_root, tmp_path):
    """SIGINT to torchrun (Ctrl-C) after the first checkpoint: rank 0 stops at a step boundary,
    both ranks leave the process group together, one line from rank 0, the checkpoint whole."""
    import signal
    import time

    out = tmp_path / "run"
    args = [*fixed_args(data_root, out), "--epochs", "500", "--set", "trainer.checkpoint_every=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "rlmix.train", *args,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            time.sleep(0.2)
        time.sleep(1.0)  # into a later epoch
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert lines == ["error: stopped by SIGINT; the last epoch's checkpoint is kept (continue "
                     "with --resume)"], stderr[-3000:]  # fmt: skip
    frames = [line for line in stderr.splitlines() if line.lstrip().startswith("File ")]
    assert not [f for f in frames if "rlmix" in f or "gloo" in f], stderr[-3000:]
    assert "Connection reset" not in stderr and "terminate called" not in stderr
    assert load_checkpoint(out / "checkpoint.pt")["history"][-1]["epoch"] >= 1


def test_an_error_on_one_rank_ends_every_rank_with_the_same_line(data_root, tmp_path):
    """A reward that raises on rank 1 only: both ranks stop at that step, exit 1 within
    seconds instead of rank 0 waiting for rank 1 forever, and rank 0 prints the one line."""
    import time

    args = [
        *fixed_args(data_root, tmp_path / "run"), "--policy", "rmix", "--epochs", "2",
        "--reward", "tests.reward_fixtures:fails_on_rank_1",
    ]  # fmt: skip
    start = time.perf_counter()
    proc = torchrun("-m", "rlmix.train", *args, timeout=120, check=False)
    assert time.perf_counter() - start < 60
    assert proc.returncode != 0
    expected = (
        "error: rank 1: reward 'tests.reward_fixtures:fails_on_rank_1' raised RuntimeError: "
        "rank 1's reward server went away"
    )
    lines = [line for line in proc.stderr.splitlines() if line.endswith(expected)]
    assert len(lines) == 1, proc.stderr[-3000:]  # agreed on: rank 0 reports it for both
    assert "Traceback" not in proc.stderr.split("ChildFailedError")[0].split(expected)[0]


def test_learned_mix_under_ddp_holds_one_policy_on_every_rank(data_root, tmp_path):
    """A user's DDP loop with LearnedMix: each rank mixes its own shard (25 of the global 50),
    the policy acts on and learns from the global batch, and both ranks hold bit-identical
    weights after every PPO update."""
    torchrun(str(ROOT / "tests" / "dist_worker.py"), "learned", str(tmp_path), data_root)
    ranks = [torch.load(tmp_path / f"learned_{r}.pt", weights_only=False) for r in range(2)]
    a, b = ranks
    assert set(a["shapes"]) == set(b["shapes"]) == {(25, 3, 32, 32)}
    assert len(a["snapshots"]) == len(b["snapshots"]) == 4  # 2 rollouts an epoch, 2 epochs
    for before, after in zip(a["snapshots"], a["snapshots"][1:], strict=False):
        assert any(not torch.equal(before[k], after[k]) for k in before)  # it learns
    for one, two in zip(a["snapshots"], b["snapshots"], strict=True):
        assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
    assert a["history"] == b["history"] and len(a["history"]) == 2
    assert sum(a["history"][0]["q_hist"]) == 8 * 50  # decisions of the global batch


def test_partner_aware_agent_on_two_ranks_equals_one_process_with_block_diagonal_partners(
    data_root, tmp_path, monkeypatch
):
    """The default's partner-aware agent under torchrun: partners are drawn within each rank's
    shard and every slot sees its own. With a model without BatchNorm (so that shards and the
    whole batch are normalised alike), the two-rank run equals one process handed the same
    block-diagonal draws (each half of the batch paired within itself, with the permutation
    each rank draws), up to float rounding."""
    import dataclasses

    from rlmix.mixing import RMix

    args = [
        "--epochs", "1", "--no-progress", "--set", f"data.root={data_root}",
        "--set", "data.options={train_size: 100, test_size: 100}", "--set", "data.val_size=0",
        "--set", "trainer.batch_size=50", "--set", "model.name=tests.user_model_fixtures:conv_head",
        "--set", "env.partner_first=true", "--set", "env.eval_fgsm=false",
        "--set", "agent.n_steps=2", "--set", "agent.batch_size=50",
    ]  # fmt: skip
    torchrun("-m", "rlmix.train_agent", *args, "--out", str(tmp_path / "two"))
    sample = RMix.sample

    def block_diagonal(self, x, generator=None):
        half = sample(self, x[0::2], generator)  # what each rank draws for its shard
        perm = torch.empty(x.shape[0], dtype=torch.long)
        for r in range(2):
            perm[r::2] = r + 2 * half.perm
        return dataclasses.replace(half, perm=perm)

    monkeypatch.setattr(RMix, "sample", block_diagonal)
    assert run_main(train_agent_main, [*args, "--out", str(tmp_path / "one")]) == 0
    one, two = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    (row1,), (row2,) = one["epochs"], two["epochs"]
    assert row1["q_hist"] == row2["q_hist"]  # the same decisions
    for key in ("train_loss", "policy_entropy_frac", "policy_expected_q", "top1", "nll"):
        assert row1[key] == pytest.approx(row2[key], rel=1e-4), key
    # teach is a difference of two cross-entropies (~2.4 each): their rounding, not theirs alone
    assert row1["reward"] == pytest.approx(row2["reward"], abs=1e-4 * row1["train_loss"])
    # (the same-batch counterfactual draws its random top-k per rank: its gain differs)
    # the learned policies act alike on the same slots
    from agents.serialize import load_policy

    policies = [load_policy(tmp_path / d / "agent.zip")[0] for d in ("one", "two")]
    space = policies[0].observation_space
    space.seed(0)
    slots = [space.sample() for _ in range(200)]
    obs = {k: torch.as_tensor(np.stack([o[k] for o in slots])) for k in slots[0]}
    with torch.no_grad():
        p1, p2 = (p.action_probs(obs) for p in policies)
    assert (p1 - p2).abs().max() < 1e-5  # measured: 1.4e-6
    assert (p1 - 0.1).abs().max() > 1e-2  # and it learned something (measured: 0.028)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--set", "mix.k=1"], "error: config key 'mix.k' must be >= 2 (got 1)"),
        (["--policy", "agent", "--set", "frozen_agent.path={tmp}/none.zip"],
         "error: agent file '{tmp}/none.zip' does not exist"),
        (["--policy", "agent", "--set", "frozen_agent.path={tmp}"], "error: agent file '{tmp}'"),
    ],
)  # fmt: skip
def test_an_error_every_rank_meets_is_printed_once(argv, expected, data_root, tmp_path):
    """A usage error (every rank parses the same arguments) or one rank 0 meets and hands on
    (a frozen agent's file) is one line from rank 0, with no traceback from the other rank."""
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    args = [*fixed_args(data_root, tmp_path / "run"), *argv]
    proc = torchrun("-m", "rlmix.train", *args, timeout=120, check=False)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert lines == [lines[0]] and lines[0].startswith(expected.replace("{tmp}", str(tmp_path)))
    # torchrun then reports the failed workers with a traceback of its own (torch/distributed)
    frames = [line for line in proc.stderr.splitlines() if line.lstrip().startswith("File ")]
    assert not [f for f in frames if "rlmix" in f or "gloo" in f], proc.stderr[-3000:]
    assert "Connection closed" not in proc.stderr


def test_a_partner_aware_frozen_agent_runs_under_torchrun(tiny_cli_args, data_root, tmp_path):
    """A policy trained with env.partner_first applied frozen on two ranks: each slot is shown
    its within-shard partner, as when it learned."""
    args = [*tiny_cli_args, "--epochs", "1", "--no-progress", "--set", "env.partner_first=true"]
    assert run_main(train_agent_main, [*args, "--out", str(tmp_path / "agent")]) == 0
    frozen = [
        *fixed_args(data_root, tmp_path / "frozen"), "--policy", "agent",
        "--set", "env.partner_first=true", "--set", f"frozen_agent.path={tmp_path / 'agent' / 'agent.zip'}",
    ]  # fmt: skip
    proc = torchrun("-m", "rlmix.train", *frozen)
    assert proc.stdout.count("agent finished (1 epoch)") == 1
    saved = json.loads((tmp_path / "frozen" / "metrics.json").read_text())
    assert saved["policy"] == "agent" and sum(saved["final"]["q_hist"]) == 2 * 50
