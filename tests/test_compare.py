"""rlmix.compare: paired intervals against --reference, --jobs, one CSV row per run."""

import csv
import json

import pytest

from rlmix.compare import arms, compare, make_jobs
from rlmix.config import load_config
from rlmix.errors import ConfigError
from rlmix.stats import paired_difference
from rlmix.study import AgentSpec, run_job


def _jobs(cfg, policies, seeds, out, reference="rmix"):
    specs = [AgentSpec(cfg.env.reward, cfg.env.reward)]
    return make_jobs(cfg, arms(cfg, policies, specs, reference), seeds, out)


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_reference_and_paired_intervals(tiny_config, tmp_path):
    cfg = tiny_config(epochs=1, eval_fgsm=False)
    rows = compare(
        cfg, ["rmix", "mixup"], [0, 1, 2], None, tmp_path, reference="mixup", progress=False
    )
    by_policy = {r["policy"]: r for r in rows}
    assert set(by_policy) == {"rmix", "mixup"} and "top1_diff" not in by_policy["mixup"]
    runs = _csv(tmp_path / "runs.csv")
    assert len(runs) == 6 and {r["seed"] for r in runs} == {"0", "1", "2"}
    top1 = {(r["policy"], r["seed"]): float(r["top1"]) for r in runs}
    expected = paired_difference(
        [top1["rmix", s] for s in "012"], [top1["mixup", s] for s in "012"]
    )
    got = by_policy["rmix"]["top1_diff"]
    assert (got.mean, got.low, got.high) == pytest.approx(
        (expected.mean, expected.low, expected.high)
    )
    table = (tmp_path / "results.md").read_text()
    assert "Δ top1 vs mixup [95 % CI]" in table
    summary = _csv(tmp_path / "summary.csv")
    rmix = next(r for r in summary if r["policy"] == "rmix")
    assert float(rmix["top1_diff_low"]) == pytest.approx(expected.low)
    # paired: a seed fixes the data order, so one policy's run repeats exactly
    (job,) = _jobs(cfg, ["rmix"], [1], tmp_path / "again", "mixup")
    first = json.loads((tmp_path / "rmix" / "seed1" / "metrics.json").read_text())
    assert run_job(job).final == first["final"]


def test_jobs_run_in_parallel_processes(tiny_config, tmp_path):
    cfg = tiny_config(epochs=1, eval_fgsm=False)
    compare(cfg, ["vanilla", "rmix"], [0, 1], None, tmp_path / "par", jobs=2, progress=False)
    runs = {(r["policy"], r["seed"]): r for r in _csv(tmp_path / "par" / "runs.csv")}
    assert len(runs) == 4
    # a worker runs with cpu_count // jobs threads; the same job in this process, same threads
    import os

    threads = max(1, (os.cpu_count() or 1) // 2)
    (job,) = _jobs(cfg, ["rmix"], [1], tmp_path / "solo")
    solo = run_job(job, threads)
    assert solo.final["top1"] * 100 == pytest.approx(float(runs["rmix", "1"]["top1"]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"reference": "agent"},
            r"--reference: unknown policy 'agent'; choose one of: comixup, constant",
        ),
        ({"jobs": 0}, r"--jobs must be >= 1 \(got 0\)"),
        ({"confidence": 1.0}, r"--confidence must be in \(0, 1\)"),
        ({"seeds": [0, 0]}, r"--seeds: each seed once"),
        (
            {"rewards": ["val_loss_drop"], "policies": ["agent"]},
            r"--reward val_loss_drop needs a held-out split",
        ),
        ({"counterfactual_every": 0}, r"--counterfactual-every must be >= 1 \(got 0\)"),
        ({"versus": ["cutmix_plus"]}, r"--versus cutmix_plus: name a fixed policy that --policies"),
        (
            {"agents": ["t:teach,transfer=maybe"], "policies": ["agent"]},
            r"--agent 't:teach,transfer=maybe': transfer must be true or false",
        ),
        # an arm may not step outside --out, share a directory, or override the study's keys
        ({"agents": ["a]:teach", "a:hardness"]}, r"the name 'a\]' may hold only letters"),
        ({"agents": ["../../x:teach"]}, r"the name '../../x' may hold only letters"),
        ({"agents": ["a/b:teach"]}, r"the name 'a/b' may hold only letters"),
        ({"agents": ["a:teach,seed=7"]}, r"'seed' is set by the study for every run"),
        ({"agents": ["a:teach,out=/tmp/x"]}, r"'out' is set by the study for every run"),
        ({"agents": ["a:teach,env.reward=hardness"]}, r"'env.reward' is set by the study"),
        ({"agents": ["a:teach,reward=hardness"]}, r"'reward' is set by the study"),
        ({"agents": ["a:teach,policy=rmix"]}, r"'policy' is set by the study"),
        ({"fixed_arms": ["x:agent"]}, r"--arm 'x:agent': unknown fixed policy 'agent'"),
        ({"fixed_arms": ["x:rmix,seed=3"]}, r"--arm 'x:rmix,seed=3': 'seed' is set by the study"),
        ({"fixed_arms": ["x:rmix", "x:rmix,trainer.epochs=3"]}, r"--arm 'rmix\[x\]' is given"),
        ({"fixed_arms": ["x:rmix,transfer=true"]}, r"transfer=true is an --agent option"),
        ({"versus": ["rmix[y]"]}, r"--versus rmix\[y\]: name a fixed policy that --policies"),
    ],
)
def test_compare_argument_errors(tiny_config, tmp_path, kwargs, match):
    args = {"policies": ["rmix"], "seeds": [0], "rewards": None, **kwargs}
    with pytest.raises(ConfigError, match=match):
        compare(
            tiny_config(),
            args.pop("policies"),
            args.pop("seeds"),
            args.pop("rewards"),
            tmp_path,
            **args,
        )


def test_search_then_transfer(tiny_config, tmp_path):
    """A transfer arm runs the agent's search (holding out what its reward reads), then a fresh
    classifier on the whole budget mixed by the search's frozen policy: the same run as
    ``rlmix.train --policy agent`` on that agent file and seed."""
    from rlmix.train import train_fixed

    cfg = tiny_config(epochs=1, eval_fgsm=False, **{"data.val_size": 50})
    variant = "v:val_grad_align,transfer=true,agent.baseline=counterfactual"
    rows = compare(
        cfg, ["agent", "rmix"], [0], None, tmp_path / "s", agents=[variant], progress=False
    )
    by_policy = {r["policy"]: r for r in rows}
    assert set(by_policy) == {"agent[v]", "agent[v][search]", "rmix"}  # no rmix[held-out]
    search, transfer = by_policy["agent[v][search]"], by_policy["agent[v]"]
    assert (search["train_images_mean"], search["held_out_images_mean"]) == (350, 50)
    assert (transfer["train_images_mean"], transfer["held_out_images_mean"]) == (400, 0)
    assert transfer["search_gain_run_mean"] == search["gain_val_grad_align_run_mean"]
    assert "gain_val_grad_align_run_mean" not in transfer  # it would need held-out data
    table = (tmp_path / "s" / "results.md").read_text()
    assert "search run's gain" in table and "A transfer row" in table
    agent_file = tmp_path / "s" / "agent_v_search" / "seed0" / "agent.zip"
    by_hand = load_config(
        cfg.to_dict(),
        {
            "policy": "agent",
            "frozen_agent.path": str(agent_file),
            "env.reward": "none",
            "out": str(tmp_path / "h"),
        },
    )
    metrics = train_fixed(by_hand, progress=False)
    saved = json.loads((tmp_path / "s" / "agent_v" / "seed0" / "metrics.json").read_text())
    assert metrics["final"] == saved["final"]
    assert metrics["epochs"] == saved["epochs"]


def test_a_transfer_run_scores_its_reward_when_it_needs_no_held_out_data(tiny_config, tmp_path):
    cfg = tiny_config(epochs=1, eval_fgsm=False)
    rows = compare(
        cfg,
        ["agent", "rmix", "cutmix_plus"],
        [0, 1],
        None,
        tmp_path,
        agents=["h:hardness,transfer=true", "t:teach"],
        versus=["cutmix_plus"],
        counterfactual_every=2,
        progress=False,
    )
    by_policy = {r["policy"]: r for r in rows}
    assert "gain_hardness_run_ci" in by_policy["agent[h]"]
    assert "top1_diff_vs_cutmix_plus" in by_policy["agent[t]"]
    # Holm's family is the agent variants (not the search row, not the fixed policies)
    assert (
        "top1_diff_holm_p" in by_policy["agent[h]"] and "top1_diff_holm_p" in by_policy["agent[t]"]
    )
    assert "top1_diff_holm_p" not in by_policy["agent[h][search]"]
    assert "top1_diff_holm_p" not in by_policy["cutmix_plus"]
    study = json.loads((tmp_path / "study.json").read_text())
    every = {a["label"]: a["counterfactual_every"] for a in study["arms"]}
    assert every == {"agent[h]": 2, "agent[t]": 2, "rmix": 2, "cutmix_plus": None}


def test_tables_only_tabulates_the_finished_seeds_and_runs_nothing(tiny_config, tmp_path):
    cfg = tiny_config(epochs=1, eval_fgsm=False)
    args = (cfg, ["rmix", "mixup"], [0, 1], None, tmp_path)
    with pytest.raises(ConfigError, match="nothing to resume"):
        compare(*args, tables_only=True, progress=False)
    compare(*args, progress=False)
    (tmp_path / "mixup" / "seed1" / "metrics.json").unlink()  # seed 1 unfinished
    rows = compare(*args, tables_only=True, progress=False)
    assert {r["policy"]: r["seeds"] for r in rows} == {"rmix": 1, "mixup": 1}
    assert "seeds [0] (tables only)" in (tmp_path / "results.md").read_text()
    assert not (tmp_path / "mixup" / "seed1" / "metrics.json").exists()  # nothing ran


def test_a_difference_reward_agent_scores_every_step_however_its_baseline_is_set(tiny_config):
    """The counterfactual is thinned where it only reports; an agent learning from it (the
    difference baseline, set in the study's config or in its --agent spec) scores every step."""
    from rlmix.compare import agent_specs, arms

    cfg = tiny_config(**{"agent.baseline": "counterfactual"})
    specs = agent_specs(None, ["d:teach", "c:teach,agent.baseline=critic"], "teach")
    every = {
        a["label"]: a["counterfactual_every"]
        for a in arms(cfg, ["agent", "rmix"], specs, "rmix", 5)
    }
    assert every == {"agent[d]": 1, "agent[c]": 5, "rmix": 5}  # R-Mix logs teach
    specs = agent_specs(None, ["s:teach,agent.baseline=counterfactual"], "teach")
    every = {
        a["label"]: a["counterfactual_every"]
        for a in arms(tiny_config(), ["agent"], specs, "rmix", 5)
    }
    assert every == {"agent[s]": 1}


def test_arms_never_share_a_run_directory(tiny_config, tmp_path):
    from rlmix.compare import agent_specs, arm_specs

    cfg = tiny_config()
    specs = agent_specs(None, ["a:teach", "a.b:hardness"], "teach")
    fixed = arm_specs(["long:rmix,trainer.epochs=3"])
    study = arms(cfg, ["agent", "rmix"], specs, "rmix", fixed=fixed)
    jobs = make_jobs(cfg, study, [0, 1], tmp_path)
    dirs = [j.out for j in jobs]
    assert len(set(dirs)) == len(dirs) == 8
    assert all(tmp_path in d.parents for d in dirs)
    long = next(j for j in jobs if j.label == "rmix[long]")
    assert long.cfg.trainer.epochs == 3 and long.cfg.seed == 0 and long.policy == "rmix"
    clash = [{**study[0], "label": "agent[a]"}, {**study[0], "label": "agent_a"}]
    with pytest.raises(ConfigError, match="would share the run directory"):
        make_jobs(cfg, clash, [0], tmp_path)


def test_a_fixed_arm_runs_with_its_own_settings_on_the_same_seeds(tiny_config, tmp_path):
    """``--arm`` runs a fixed policy with its own settings (here: more epochs, equal compute)
    beside the study's arms, paired on the same seeds; ``--versus`` takes its label."""
    cfg = tiny_config(epochs=1, eval_fgsm=False)
    rows = compare(
        cfg,
        ["rmix", "cutmix_plus"],
        [0, 1],
        None,
        tmp_path,
        fixed_arms=["2ep:cutmix_plus,trainer.epochs=2"],
        versus=["cutmix_plus[2ep]"],
        progress=False,
    )
    by_policy = {r["policy"]: r for r in rows}
    assert set(by_policy) == {"rmix", "cutmix_plus", "cutmix_plus[2ep]"}
    long = json.loads((tmp_path / "cutmix_plus_2ep" / "seed1" / "metrics.json").read_text())
    assert len(long["epochs"]) == 2 and long["policy"] == "cutmix_plus" and long["seed"] == 1
    runs = {(r["policy"], r["seed"]): float(r["top1"]) for r in _csv(tmp_path / "runs.csv")}
    expected = paired_difference(
        [runs["rmix", s] for s in "01"], [runs["cutmix_plus[2ep]", s] for s in "01"]
    )
    got = by_policy["rmix"]["top1_diff_vs_cutmix_plus[2ep]"]
    assert (got.mean, got.low, got.high) == pytest.approx(
        (expected.mean, expected.low, expected.high)
    )
