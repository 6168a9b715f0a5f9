"""The tables and CSV files of the study commands: what ``rlmix.compare`` and ``rlmix.paired``
print and write, rendered from their numbers (nothing here runs or reads a study).

- :func:`to_markdown`, :func:`runs_csv`, :func:`summary_csv`: one study's ``results.md``,
  ``runs.csv`` and ``summary.csv`` (``rlmix.compare``, from :func:`rlmix.compare.summarise`);
- :func:`paired_tables`: the table and CSV of two studies' paired differences
  (``rlmix.paired``);
- :func:`csv_text`: rows as CSV text, for both.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from rlmix.stats import PairedDifference, holm_paired
from rlmix.study import HELD_OUT, METRICS, SEARCH, Result

PAIRED = ("top1", "ece")  # metrics whose paired difference to the reference is tabulated
#: runs.csv column -> what the paired tables call it and its decimals (others: 4).
PAIRED_METRICS = {"top1": ("top-1 (%)", 2), "nll": ("NLL", 4), "ece": ("ECE (%)", 2)}


def csv_text(rows: list[dict[str, Any]]) -> str:
    """``rows`` as CSV text, the columns in order of first appearance."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


# -- one study (rlmix.compare) ----------------------------------------------------------------


def _cell(mean_sd: tuple[float, float], digits: int = 2) -> str:
    return f"{mean_sd[0]:.{digits}f} ± {mean_sd[1]:.{digits}f}"


def _diff_cell(d: PairedDifference | None, digits: int = 2) -> str:
    """``+1.23 [+0.40, +2.06]*``: the mean difference, its interval, * when it excludes 0."""
    if d is None:
        return "—"
    if d.n < 2:
        return f"{d.mean:+.{digits}f}"
    mark = "*" if d.excludes_zero else ""
    return f"{d.mean:+.{digits}f} [{d.low:+.{digits}f}, {d.high:+.{digits}f}]{mark}"


def _holm_cell(row: dict[str, Any], column: str) -> str:
    """``[+0.12, +0.95] p 0.012*``: the interval at the difference's Holm step-down level and
    the Holm-adjusted p-value, * when the difference survives the correction."""
    if f"{column}_holm_p" not in row:
        return "—"
    d = row[f"{column}_holm_ci"]
    mark = "*" if row[f"{column}_holm"] else ""
    return f"[{d.low:+.2f}, {d.high:+.2f}] p {row[f'{column}_holm_p']:.2g}{mark}"


def _trains_on(row: dict[str, Any]) -> str:
    if "train_images_mean" not in row:
        return "n/a"
    return f"{row['train_images_mean']:.0f} / {row['held_out_images_mean']:.0f}"


def _gain_rewards(rows: list[dict[str, Any]]) -> list[str]:
    keys = {k for r in rows for k in r if k.startswith("gain_") and k.endswith("_run_ci")}
    return sorted(k[len("gain_") : -len("_run_ci")] for k in keys)


def to_markdown(
    rows: list[dict[str, Any]],
    title: str,
    reference: str,
    confidence: float,
    versus: Sequence[str] = (),
) -> str:
    """``results.md``: one row per policy (mean ± std, paired differences to ``reference`` and
    to each of ``versus`` with Holm's correction, same-batch gains) and the agents' table, from
    the rows of :func:`rlmix.compare.summarise`."""
    level = f"{100 * confidence:g} %"
    present = [m for m in METRICS if any(f"{m[0]}_mean" in r for r in rows)]
    gains = _gain_rewards(rows)
    same = any("top1_diff_same" in r for r in rows)
    head = ["policy", "seeds", "trains on / held out"]
    for key, name, _ in present:
        head.append(name)
        if key in PAIRED:
            head += [f"Δ {key} vs {reference} [{level} CI]", f"Holm, Δ {key}"]
            if same and key == "top1":
                head += [f"Δ top1 vs {reference}, same training set", "Holm, same training set"]
            if key == "top1":
                for other in versus:
                    head += [f"Δ top1 vs {other} [{level} CI]", f"Holm, Δ top1 vs {other}"]
    head += [f"gain vs random on {g} [{level} CI]" for g in gains]
    head.append("s / epoch")
    lines = [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["policy"], str(r["seeds"]), _trains_on(r)]
        for key, _, _ in present:
            cells.append(
                _cell((r[f"{key}_mean"], r[f"{key}_std"])) if f"{key}_mean" in r else "n/a"
            )
            if key in PAIRED:
                cells += [_diff_cell(r.get(f"{key}_diff")), _holm_cell(r, f"{key}_diff")]
                if same and key == "top1":
                    cells += [_diff_cell(r.get("top1_diff_same")), _holm_cell(r, "top1_diff_same")]
                if key == "top1":
                    for other in versus:
                        column = f"top1_diff_vs_{other}"
                        cells += [_diff_cell(r.get(column)), _holm_cell(r, column)]
        cells += [_diff_cell(r.get(f"gain_{g}_run_ci"), 4) for g in gains]
        cells.append(_cell((r["s_per_epoch_mean"], r["s_per_epoch_std"])))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"mean ± std over seeds; Δ: paired difference to {reference} (same seeds), {level} "
        "Student-t interval, * when it excludes 0. Holm: Holm's step-down correction over the "
        "agent variants (over every policy when no agent runs) in that column: the Δ's interval "
        "at its step-down level and its paired t-test p-value adjusted, * when it is ≤ "
        f"{1 - confidence:.3g} (the difference survives the correction). "
        "Gain vs random: the policy's reward minus that of a uniformly random top-k on the same "
        "batches and weights (run mean), with its interval over seeds; — where the policy does "
        "not score that reward."
    )
    if same:
        lines.append(
            f"{reference}[{HELD_OUT}] trains on the agents' training set: the budget with the "
            "held-out split removed (and unused)."
        )
    agents = [r for r in rows if r["kind"] == "agent"]
    if agents:
        lines += ["", f"### Agents: same-batch gain over random top-k, and {reference}'s runs", ""]
        head = [
            "agent",
            "seeds",
            "reward (run mean)",
            f"same-batch gain, run [{level} CI]",
            f"same-batch gain, last epoch [{level} CI]",
            f"search run's gain [{level} CI]",
            f"Δ reward vs {reference}'s run [{level} CI]",
            "entropy, last epoch (% of ln K)",
            "mean q, last epoch",
            "std of E[q] over images",
        ]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in agents:
            reward = r["policy"]
            own = next((g for g in gains if f"gain_{g}_run_ci" in r), None)
            cells = [
                reward,
                str(r["seeds"]),
                _cell((r["reward_run_mean"], r["reward_run_std"]), 4)
                if "search_top1_mean" not in r
                else "— (transfer)",
                _diff_cell(r.get(f"gain_{own}_run_ci"), 4) if own else "—",
                _diff_cell(r.get(f"gain_{own}_last_ci"), 4) if own else "—",
                _diff_cell(r.get("search_gain_run_ci"), 4),
                _diff_cell(r.get("reward_run_diff"), 4),
                _cell((r["entropy_frac_last_mean"], r["entropy_frac_last_std"])),
                _cell((r["mean_q_last_mean"], r["mean_q_last_std"])),
                _cell((r["q_std_last_mean"], r["q_std_last_std"])),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(
            f"Δ reward vs {reference}'s run compares the rewards of two different classifier "
            "trajectories (the gain columns compare the same batches)."
        )
        if any("search_top1_mean" in r for r in agents):
            lines.append(
                f"A transfer row (with a [{SEARCH}] row) is a fresh classifier trained on the "
                "whole budget, mixed by its search run's frozen policy (sampled); its own gain "
                "is scored on the search reward where that reward needs no held-out data, and "
                "is — where it does."
            )
    lines += _versus_fixed_table(rows, level)
    return "\n".join(lines) + "\n"


def _versus_fixed_table(rows: list[dict[str, Any]], level: str) -> list[str]:
    """Each agent against every fixed policy, Holm over the fixed policies (one family per
    agent)."""
    agents = [r for r in rows if r.get("versus_fixed")]
    if not agents:
        return []
    lines = [
        "",
        "### Each agent against every fixed policy",
        "",
        f"| agent | fixed policy | seeds | Δ top-1 [{level} CI] | paired t p | Holm p | "
        f"Δ at Holm's step-down level |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in agents:
        for other, (d, h) in r["versus_fixed"].items():
            mark = "*" if h.rejected else ""
            lines.append(
                f"| {r['policy']} | {other} | {d.n} | {_diff_cell(d)} | {d.p_value:.2g} | "
                f"{h.p_adjusted:.2g}{mark} | {_diff_cell(h.difference)} |"
            )
    lines += [
        "",
        "One family per agent: its paired top-1 differences to every fixed policy in the study, "
        "Holm's step-down correction over them; * when the difference survives it.",
    ]
    return lines


def runs_csv(results: list[Result]) -> str:
    """One row per policy and seed."""
    return csv_text([{"policy": r.label, "seed": r.seed, **r.values} for r in results])


def summary_csv(rows: list[dict[str, Any]]) -> str:
    """One row per policy; each interval as ``<key>``, ``<key>_low``, ``<key>_high``."""
    flat = []
    for row in rows:
        out = {}
        for key, value in row.items():
            if key == "versus_fixed":  # each fixed policy's difference and Holm p
                for other, (d, h) in value.items():
                    name = f"top1_diff_vs_{other}"
                    out.update({name: d.mean, f"{name}_low": d.low, f"{name}_high": d.high})
                    out[f"{name}_holm_fixed_p"] = h.p_adjusted
            elif isinstance(value, PairedDifference):
                out.update({key: value.mean, f"{key}_low": value.low, f"{key}_high": value.high})
            else:
                out[key] = value
        flat.append(out)
    return csv_text(flat)


# -- two studies paired (rlmix.paired) -------------------------------------------------------


def paired_tables(
    paired: dict[str, dict[str, tuple[list[int], PairedDifference]]],
) -> tuple[str, str]:
    """The markdown table (one row per policy, one column per metric, with Holm) and the CSV."""
    policies = list(dict.fromkeys(p for rows in paired.values() for p in rows))
    holm = {m: holm_paired({p: d for p, (_, d) in rows.items()}) for m, rows in paired.items()}
    header = "| policy | seeds | " + " | ".join(
        f"Δ {metric_label(m)} | Holm, Δ {metric_label(m)}" for m in paired
    )
    lines = [header + " |", "|---|---|" + "---|---|" * len(paired)]
    records = []
    for policy in policies:
        cells = []
        seeds: list[int] = []
        for m, rows in paired.items():
            seeds, d = rows[policy]
            h = holm[m][policy]
            cells.append(
                f"{_interval(d, PAIRED_METRICS.get(m, (m, 4))[1])}{'*' if d.excludes_zero else ''}"
            )
            cells.append(f"p {h.p_adjusted:.2g}{'*' if h.rejected else ''}")
            records.append(
                {
                    "policy": policy,
                    "metric": m,
                    "seeds": len(seeds),
                    "mean": d.mean,
                    "low": d.low,
                    "high": d.high,
                    "p": d.p_value,
                    "p_holm": h.p_adjusted,
                    "survives_holm": h.rejected,
                }
            )
        lines.append(f"| {policy} | {' '.join(map(str, seeds))} | {' | '.join(cells)} |")
    return "\n".join(lines), csv_text(records)


def metric_label(metric: str) -> str:
    """What the paired tables call a ``runs.csv`` column."""
    return PAIRED_METRICS.get(metric, (metric, 4))[0]


def _interval(d: PairedDifference, decimals: int) -> str:
    return f"{d.mean:+.{decimals}f} [{d.low:+.{decimals}f}, {d.high:+.{decimals}f}]"


__all__ = [
    "PAIRED",
    "PAIRED_METRICS",
    "csv_text",
    "metric_label",
    "paired_tables",
    "runs_csv",
    "summary_csv",
    "to_markdown",
]
