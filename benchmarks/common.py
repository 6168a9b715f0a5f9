"""Helpers shared by the benchmarks: arguments, device, timing, medians, tables, targets, JSON.

Conventions: times are wall-clock (``time.perf_counter``) in milliseconds unless a name says
otherwise (``_s`` seconds, ``_mib`` MiB). Each figure is the median over ``--repeats`` timed
repeats after ``--warmup`` untimed ones, and the compared variants run one after another inside
every repeat, in an order that rotates from repeat to repeat (:func:`time_alternating`), so drift
in the machine's speed and order effects hit them alike. Ratios are always of two medians
measured in the same process on the same data.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from rlmix.config import Config

Timer = Callable[[Callable[[], object]], float]


def add_common_args(
    p: argparse.ArgumentParser,
    *,
    repeats: int | None,
    warmup: int | None,
    amp: bool = False,
    repeats_help: str | None = None,
    warmup_help: str | None = None,
) -> None:
    """``--device --repeats --warmup --threads --json`` (and ``--amp``) for every benchmark.

    A default of None means the benchmark picks one per case; say which in ``*_help``.
    """
    p.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N (default auto)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=repeats,
        help="timed repeats per figure; the median is reported "
        + (repeats_help or f"(default {repeats})"),
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=warmup,
        help="untimed repeats first " + (warmup_help or f"(default {warmup})"),
    )
    p.add_argument(
        "--threads", type=int, help="torch intra-op threads (default: torch's own choice)"
    )
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    if amp:
        p.add_argument(
            "--amp", action="store_true", help="bfloat16 autocast on CUDA (ignored on CPU)"
        )


def check_common_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> torch.device:
    """Validate the common arguments, apply ``--threads`` and return the device."""
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.warmup is not None and args.warmup < 0:
        p.error("--warmup must be >= 0")
    if args.threads is not None:
        if args.threads < 1:
            p.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    try:
        return resolve_device(args.device)
    except (RuntimeError, ValueError) as e:
        p.error(str(e))
        raise  # unreachable: p.error exits


def add_clock_arg(p: argparse.ArgumentParser) -> None:
    """``--clock``: wall time, or this process's CPU time (:data:`CLOCKS`)."""
    p.add_argument(
        "--clock",
        choices=list(CLOCKS),
        default="wall",
        help="wall time, or this process's CPU time (on a busy CPU, with --threads 1: what the "
        "work costs; default wall)",
    )


def check_clock(p: argparse.ArgumentParser, args: argparse.Namespace, device: torch.device) -> None:
    if args.clock == "process" and device.type == "cuda":
        p.error("--clock process times the CPU: use wall time on CUDA")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else must exist on this machine."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is present")
    return device


def device_arg(device: torch.device) -> str:
    """The device as a ``trainer.device`` config value."""
    return str(device)


CLOCKS: dict[str, Callable[[], float]] = {
    "wall": time.perf_counter,
    # this process's CPU time: on a busy machine, with one thread, what the work itself costs
    "process": time.process_time,
}


def make_timer(device: torch.device, clock: str = "wall") -> Timer:
    """A function that runs ``fn`` once and returns its time in ms on ``clock`` (synchronising
    CUDA)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    now = CLOCKS[clock]

    def run(fn: Callable[[], object]) -> float:
        sync()
        start = now()
        fn()
        sync()
        return (now() - start) * 1e3

    return run


def time_alternating(
    fns: Mapping[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int,
    device: torch.device,
    number: Mapping[str, int] | None = None,
    progress: Callable[[int], None] | None = None,
    clock: str = "wall",
) -> dict[str, list[float]]:
    """Per-call times (ms) of every function, one sample of each per repeat, in turn.

    Repeat i starts with the (i mod n)-th function and goes round, so no function always runs
    first or always follows the same neighbour. ``number[name]`` calls are timed together per
    sample (default 1) and the sample is their mean, for functions too short to time one call at
    a time. ``progress(i)`` is called after repeat i; ``clock`` is a key of :data:`CLOCKS`.
    """
    run = make_timer(device, clock)
    number = number or {}
    keys = list(fns)
    samples: dict[str, list[float]] = {k: [] for k in keys}
    for i in range(warmup + repeats):
        start = i % len(keys)
        for key in keys[start:] + keys[:start]:
            fn, n = fns[key], number.get(key, 1)
            ms = run(fn if n == 1 else _repeat(fn, n)) / n
            if i >= warmup:
                samples[key].append(ms)
        if progress is not None:
            progress(i)
    return samples


def _repeat(fn: Callable[[], object], n: int) -> Callable[[], None]:
    def many() -> None:
        for _ in range(n):
            fn()

    return many


def calls_per_sample(seconds_per_call: float, target_s: float = 0.02) -> int:
    """How many calls make a sample of about ``target_s`` seconds (at least 1, at most 1000)."""
    if seconds_per_call <= 0:
        return 1000
    return max(1, min(1000, round(target_s / seconds_per_call)))


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def medians(samples: Mapping[str, Sequence[float]]) -> dict[str, float]:
    return {k: statistics.median(v) for k, v in samples.items()}


def spread(values: Sequence[float]) -> float:
    """Relative spread of the samples: (max - min) / median (0 for one sample)."""
    if len(values) < 2:
        return 0.0
    m = statistics.median(values)
    return (max(values) - min(values)) / m if m else 0.0


@dataclass
class Target:
    """One stated target: ``value <= limit`` (a ratio or a time), and whether it was met."""

    name: str
    value: float
    limit: float
    unit: str = "x"
    note: str = ""

    @property
    def met(self) -> bool:
        return self.value <= self.limit

    def line(self) -> str:
        value = (
            f"{self.value:.2f}{self.unit}" if self.unit == "x" else f"{self.value:.3g} {self.unit}"
        )
        limit = (
            f"{self.limit:.2f}{self.unit}" if self.unit == "x" else f"{self.limit:.3g} {self.unit}"
        )
        note = f" ({self.note})" if self.note else ""
        return f"{self.name}: {value} (target <= {limit}) -> {verdict(self.met)}{note}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def print_targets(targets: Sequence[Target]) -> None:
    if targets:
        print("targets:")
        for t in targets:
            print("  " + t.line())
    sys.stdout.flush()


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, left: int = 1) -> str:
    """A plain-text table: the first ``left`` columns left-aligned, the others right-aligned.

    Floats get 3 significant digits (format them before for more); a rule follows the header.
    """
    cells = [[str(h) for h in headers]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def fmt(row: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )

    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells[1:]]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "load_average": _load_average(),
    }
    if device.type == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def header_line(device: torch.device) -> str:
    """One line naming the machine, for the top of every table."""
    info = machine_info(device)
    where = info.get("cuda_device", f"{info['cpu']}, {info['cpu_count']} cores")
    return (
        f"device {info['device']} ({where}), torch {info['torch']}, {info['threads']} threads, "
        f"load average {info['load_average']}"
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def write_json(
    path: str | os.PathLike[str] | None,
    name: str,
    args: argparse.Namespace,
    device: torch.device,
    results: object,
    targets: Sequence[Target] = (),
) -> None:
    """Write ``{"benchmark", "machine", "args", "results", "targets"}`` to ``path`` (if given)."""
    if not path:
        return
    doc = {
        "benchmark": name,
        "machine": machine_info(device),
        "args": {k: v for k, v in vars(args).items() if _jsonable(v)},
        "results": results,
        "targets": [t.to_dict() for t in targets],
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)


def _jsonable(value: object) -> bool:
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """bfloat16 autocast on CUDA when ``enabled``; a disabled context elsewhere."""
    return torch.autocast(
        device.type if device.type == "cuda" else "cpu",
        dtype=torch.bfloat16,
        enabled=enabled and device.type == "cuda",
    )


def epoch_runner(variant: str, cfg: Any) -> tuple[Callable[[], None], Any]:
    """One classifier epoch of ``variant`` per call, run exactly as the training commands run it
    (the image-slot env, :class:`baselines.PolicyRunner` or the PPO agent with its updates) but
    without logs, progress bars or checkpoints; and the algorithm.

    Variants: ``vanilla`` (plain training, ``env.reward=none``: no saliency pass), ``rmix`` (the
    R-Mix random policy, with the config's reward) and ``rlmix`` (the PPO agent).
    """
    from agents.ppo import make_ppo
    from baselines import PolicyRunner, make_policy
    from envs import ImageSlotVecEnv, MixupEnv
    from rlmix.config import load_config
    from rlmix.train import resolve_fixed_config
    from rlmix.train_agent import agent_config

    if variant == "rlmix":
        cfg = agent_config(cfg)
        venv = ImageSlotVecEnv(MixupEnv(cfg), terminal_observations=cfg.agent.gamma > 0)
        algo = make_ppo(venv, cfg)
    else:
        if variant == "vanilla":
            cfg = load_config(cfg.to_dict(), {"env.reward": "none"})
        cfg = resolve_fixed_config(cfg, variant)
        venv = ImageSlotVecEnv(MixupEnv(cfg), terminal_observations=False)
        algo = PolicyRunner(make_policy(variant, venv.action_space, seed=cfg.seed), venv)
    decisions = venv.trainer.steps_per_epoch * venv.num_envs
    first = [True]

    def epoch() -> None:
        algo.learn(decisions, reset_num_timesteps=first[0])
        first[0] = False

    return epoch, algo


def report(
    name: str,
    args: argparse.Namespace,
    device: torch.device,
    table: str,
    results: Any,
    targets: Sequence[Target],
) -> dict:
    """Print a benchmark's table and targets, write its JSON (``--json``); return its results
    (``rows`` when ``results`` is a list) with the targets."""
    print(table, flush=True)
    print_targets(targets)
    write_json(args.json, name, args, device, results, targets)
    out = {"rows": results} if isinstance(results, list) else dict(results)
    return {**out, "targets": [t.to_dict() for t in targets]}


def parse(
    build_parser: Callable[[], argparse.ArgumentParser], argv: list[str] | None
) -> tuple[argparse.ArgumentParser, argparse.Namespace, torch.device]:
    """Parse a benchmark's command line and check the common options."""
    p = build_parser()
    args = p.parse_args(argv)
    return p, args, check_common_args(p, args)


def parse_env(
    build_parser: Callable[[], argparse.ArgumentParser], argv: list[str] | None
) -> tuple[argparse.ArgumentParser, argparse.Namespace, torch.device]:
    """:func:`parse` for an :func:`env_parser` benchmark, with ``--models`` and ``--set``
    checked before anything runs."""
    from rlmix.config import load_config
    from rlmix.errors import RlmixError

    p, args, device = parse(build_parser, argv)
    try:
        parse_models(args.models)
        load_config(None, list(args.overrides))  # keys, types and ranges
    except (ValueError, RlmixError) as e:
        p.error(str(e))
    return p, args, device


def main_of(execute: Callable[[list[str] | None], dict]) -> Callable[[list[str] | None], int]:
    """A benchmark's ``main``: run ``execute`` and exit 0 (errors exit through argparse)."""

    def main(argv: list[str] | None = None) -> int:
        execute(argv)
        return 0

    return main


def new_parser(name: str, description: str, **timing: Any) -> argparse.ArgumentParser:
    """The parser of ``python -m benchmarks.<name>`` with the common arguments; ``timing``:
    :func:`add_common_args`'s keywords (``repeats``, ``warmup``, ...)."""
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=description)
    add_common_args(p, **timing)
    return p


def add_models_arg(p: argparse.ArgumentParser, default: str, short_epochs: bool = False) -> None:
    """``--models``: comma-separated model names (``name:N``: short epochs of N steps)."""
    extra = "; name:N runs short epochs of N steps without evaluation" if short_epochs else ""
    p.add_argument(
        "--models", default=default, help=f"comma-separated model names{extra} (default {default})"
    )


def env_parser(
    name: str, description: str, models: str = "resnet_tiny,preactresnet18:2", **timing: Any
) -> argparse.ArgumentParser:
    """:func:`new_parser` for a benchmark that runs environment epochs, with what
    :func:`env_config` reads: ``--models`` (default ``models``; short epochs allowed) and
    ``--set``."""
    p = new_parser(name, description, **timing)
    add_models_arg(p, models, short_epochs=True)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override applied to every variant, e.g. --set trainer.batch_size=50 "
        "(repeatable)",
    )
    return p


# -- set-up shared by the benchmarks ----------------------------------------------------------


def parse_models(text: str) -> list[tuple[str, int | None]]:
    """``"a,b:2"`` -> ``[("a", None), ("b", 2)]``; raises ValueError on a bad entry."""
    from rlmix.models import list_models

    out: list[tuple[str, int | None]] = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        name, _, steps = item.partition(":")
        if name not in list_models():
            raise ValueError(f"unknown model '{name}'; choose from {', '.join(list_models())}")
        if steps and (not steps.isdigit() or int(steps) < 2):
            raise ValueError(f"'{item}': the step count after ':' must be an integer >= 2")
        out.append((name, int(steps) if steps else None))
    if not out:
        raise ValueError("no model given")
    return out


def env_config(
    model: str,
    short_steps: int | None,
    args: argparse.Namespace,
    device: torch.device,
    data_root: str,
) -> Config:
    """The embedded default config with the model, device, ``--amp``, ``--set`` and (short
    epochs of ``short_steps`` steps: a training split of that many batches, no evaluation)
    size overrides, as :mod:`benchmarks.bench_env` and :mod:`benchmarks.bench_memory` run it."""
    from rlmix.config import load_config, parse_override

    overrides: dict[str, Any] = {
        "model.name": model,
        "trainer.device": str(device),
        "trainer.amp": bool(args.amp),
    }
    if short_steps is not None:
        b = load_config(None).trainer.batch_size
        for text in args.overrides:  # a --set batch size decides the split size
            key, value = parse_override(text)
            if key in ("trainer.batch_size", "batch_size"):
                b = int(value)
        overrides.update(
            {
                "data.root": data_root,
                "data.options": {"train_size": short_steps * b, "test_size": b},
                "data.val_size": 0,
                "trainer.epochs": 10_000,
                "env.eval_every": 10_000,
                "agent.n_steps": short_steps,
            }
        )
    overrides.update(dict(parse_override(o) for o in args.overrides))
    return load_config(None, overrides)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a benchmark's subprocess: this one, with this checkout first on
    ``PYTHONPATH`` (so that it imports the same code from any directory), plus ``extra``."""
    root = str(Path(__file__).resolve().parent.parent)
    rest = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + rest if rest else ""), **extra}


def random_batch(
    b: int, side: int, num_classes: int, seed: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
    """Images (B, 3, S, S) uniform in [0, 1) and int labels (B,) on ``device``, and the CPU
    generator that drew them (it goes on to draw the mixes). Also seeds torch's global
    generator: model initialisation and torchvision's transforms draw from it."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, side, side, generator=gen).to(device)
    return x, torch.randint(num_classes, (b,), generator=gen).to(device), gen


@dataclass
class MixDraws:
    """One mixing call on a fixed batch, with fresh draws from ``gen`` as the trainer makes them:
    lam ~ Beta(1, 1) and partners, then CutMix's box or R-Mix's grid and top-k q (over ``k``)."""

    x: torch.Tensor
    y: torch.Tensor
    gen: torch.Generator
    grids: tuple[int, ...] = (2, 4)
    k: int = 10

    def _lam_perm(self) -> tuple[float, torch.Tensor]:
        from rlmix.mixing import sample_lam, sample_perm

        return sample_lam(1.0, self.gen), sample_perm(len(self.x), self.gen, device=self.x.device)

    def mixup(self) -> tuple[torch.Tensor, torch.Tensor]:
        from rlmix.mixing import mixup

        return mixup(self.x, self.y, *self._lam_perm())

    def cutmix(self) -> tuple[torch.Tensor, torch.Tensor]:
        from rlmix.mixing import cutmix

        return cutmix(self.x, self.y, *self._lam_perm(), generator=self.gen)

    def rmix(
        self, saliency: torch.Tensor, fn: Callable[..., Any] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """R-Mix of the batch by its ``saliency`` (B, S, S) with ``fn`` (default
        :func:`rlmix.mixing.rmix`, or one with its arguments)."""
        from rlmix.mixing import rmix, sample_grid, sample_q
        from rlmix.saliency import pool_saliency

        lam, perm = self._lam_perm()
        pooled = pool_saliency(saliency, sample_grid(self.grids, self.gen))
        q = sample_q(len(self.x), self.k, self.gen).to(self.x.device)
        return (fn or rmix)(self.x, self.y, pooled, q, lam, perm)


def training_step(
    model: torch.nn.Module, device: torch.device, amp: bool = False
) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One plain training step of ``model`` per call on (images, soft targets): SGD with Nesterov
    momentum and weight decay, soft-target cross-entropy, bfloat16 autocast with ``amp``."""
    from rlmix.losses import soft_ce

    opt = torch.optim.SGD(
        model.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-4
    )

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        with autocast(device, amp):
            logits = model(x)
        soft_ce(logits.float(), y).backward()
        opt.step()

    return step


def plan_repeats(
    args: argparse.Namespace, params: int, device: torch.device, small: tuple[int, int]
) -> tuple[int, int]:
    """(repeats, warmup) for a model: ``--repeats`` / ``--warmup`` when given, else ``small``
    for a model of up to 1M parameters or on an accelerator, and (5, 1) for a larger one on a
    CPU."""
    large = params > 1_000_000 and device.type == "cpu"
    repeats = args.repeats if args.repeats is not None else (5 if large else small[0])
    warmup = args.warmup if args.warmup is not None else (1 if large else small[1])
    return repeats, warmup
