"""The RL-Mix agent learns: on the embedded default, per-image PPO finds a context-dependent
optimum (the probe_rank reward), and its policy diagnostics show it."""

from rlmix.config import load_config
from rlmix.train_agent import train_agent


def test_per_image_ppo_closes_the_gap_to_a_context_dependent_optimum(data_root, tmp_path):
    """probe_rank pays cos(2 pi (a - t) / K): every policy that ignores the observation scores
    0 in expectation (random top-k included), the optimum 1. Within the default run's steps
    the agent must close at least 80 % of that gap (mean reward over the last 5 epochs >= 0.8)."""
    cfg = load_config(
        None,
        {
            "out": str(tmp_path / "probe"),
            "data.root": data_root,
            "env.reward": "probe_rank",
            "env.eval_fgsm": False,  # evaluation does not change the trajectory; saves time
        },
    )
    metrics = train_agent(cfg, progress=False)
    epochs = metrics["epochs"]
    assert len(epochs) == load_config(None).trainer.epochs
    random_reward, optimum = 0.0, 1.0
    final = sum(e["reward"] for e in epochs[-5:]) / 5  # the final policy's expected reward
    closed = (final - random_reward) / (optimum - random_reward)
    assert closed >= 0.8, [round(e["reward"], 3) for e in epochs[::10]]
    assert abs(epochs[0]["reward"]) < 0.1  # it starts from the random policy's level
    assert epochs[0]["policy_entropy_frac"] > 0.95 and epochs[-1]["policy_entropy_frac"] < 0.3
    assert epochs[-1]["policy_q_std"] > 0.2  # the policy depends on the observation
