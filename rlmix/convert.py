"""Convert a trusted pickled agent file or checkpoint (rlmix before agent format 1) to the format
that loads without pickles.

    python -m rlmix.convert runs/old/agent.zip --trust             # in place
    python -m rlmix.convert runs/old/checkpoint.pt --trust         # an RL-Mix checkpoint
    python -m rlmix.convert old.zip new.zip --trust

Before agent format 1, rlmix stored the agent as a Stable-Baselines3 zip (in ``agent.zip``, and
as bytes inside ``checkpoint.pt``), whose settings ``PPO.load`` unpickles: loading such a file
can run any code it carries. rlmix now refuses them. This command unpickles one (``--trust`` says you know where
it comes from) and writes it again as JSON settings and tensors (:mod:`agents.serialize`).
``python -m agents.convert``, its name before it moved up to the commands, still runs it.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Sequence
from pathlib import Path

import torch
from stable_baselines3 import PPO

from agents.serialize import agent_state, write_agent
from rlmix.checkpoints import load_checkpoint, save_checkpoint
from rlmix.cli import ArgumentParser, run_main
from rlmix.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m rlmix.convert",
        description="Rewrite a trusted pickled agent.zip or RL-Mix checkpoint.pt (rlmix before agent "
        "format 1, which embed "
        "a pickled Stable-Baselines3 zip) as JSON settings and tensors, which rlmix loads "
        "without unpickling anything.",
    )
    p.add_argument("source", help="the old agent.zip or checkpoint.pt")
    p.add_argument("target", nargs="?", help="where to write (default: replace the source)")
    p.add_argument(
        "--trust",
        action="store_true",
        help="required: converting unpickles the source, which can run code it carries",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _unpickle(data: bytes, where: str) -> PPO:
    try:
        return PPO.load(io.BytesIO(data), device="cpu")
    except Exception as e:  # SB3 raises many types for foreign files
        raise ConfigError(f"{where} could not be read as a Stable-Baselines3 agent: {e}") from e


def convert(source: Path, target: Path) -> str:
    """Convert ``source`` into ``target``; returns what was converted."""
    if not source.is_file():
        raise ConfigError(f"'{source}' does not exist")
    if source.suffix == ".pt":
        state = load_checkpoint(source)
        agent = state.get("agent")
        if not isinstance(agent, torch.Tensor):
            raise ConfigError(f"checkpoint '{source}' holds no Stable-Baselines3 agent to convert")
        model = _unpickle(agent.numpy().tobytes(), f"checkpoint '{source}'")
        state["agent"] = agent_state(model)
        save_checkpoint(
            target, {k: v for k, v in state.items() if k not in ("format", "rlmix_version")}
        )
        return f"checkpoint {source} -> {target}"
    model = _unpickle(source.read_bytes(), f"agent file '{source}'")
    write_agent(target, agent_state(model))
    return f"agent file {source} -> {target}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.trust:
        raise ConfigError(
            f"refusing to convert '{args.source}' without --trust: converting unpickles it, "
            "which runs any code it carries"
        )
    source = Path(args.source)
    print(f"converted {convert(source, Path(args.target) if args.target else source)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
