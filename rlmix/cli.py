"""Command-line plumbing shared by ``rlmix.train``, ``rlmix.train_agent`` and ``rlmix.compare``."""

from __future__ import annotations

import argparse
import re
import sys
import traceback
from collections.abc import Callable, Sequence

from rlmix import distributed
from rlmix.errors import ConfigError, RlmixError


def add_config_args(parser: argparse.ArgumentParser, *, seed: bool = True) -> None:
    """The options every entry point shares (``--seed`` unless the command takes seeds of its
    own, as ``rlmix.compare --seeds`` does)."""
    parser.add_argument(
        "--config",
        default=None,
        help="YAML config path or a name in configs/ (default: the embedded default)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set trainer.lr_max=0.2 (repeatable; YAML values)",
    )
    parser.add_argument("--epochs", type=int, help="classifier epochs (trainer.epochs)")
    if seed:
        parser.add_argument("--seed", type=int, help="random seed (seed)")
    parser.add_argument("--out", help="run directory (out)")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks instead of one-line errors"
    )


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (got {value})")
    return value


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """Options of the commands that train: resume, early stop, progress bars."""
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument(
        "--stop-after-epoch",
        type=positive_int,
        metavar="N",
        help="stop after epoch N (checkpointed; continue later with --resume)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run_training(train: Callable[..., dict], cfg: object, args: argparse.Namespace) -> dict:
    """Join torchrun's process group (if launched by it) and call ``train(cfg, ...)`` with the
    run options of :func:`add_run_args`; progress bars show on rank 0 only. A follower rank
    gets ``{"exit_code": c}`` back: rank 0 reports the run. A finished run leaves the process
    group, every rank together: gloo's threads outliving it can abort the interpreter at exit."""
    distributed.setup()
    metrics = train(
        cfg,
        resume=args.resume,
        progress=not args.no_progress and distributed.current().is_main,
        stop_after=args.stop_after_epoch,
    )
    distributed.teardown()  # on an error the other ranks may be gone: the process just exits
    return metrics


def overrides_from_args(args: argparse.Namespace, **extra: object) -> list[str]:
    """``--set`` values plus the shortcut flags, as dotted ``key=value`` strings."""
    out = list(args.overrides)
    shortcuts = (("trainer.epochs", args.epochs), ("seed", getattr(args, "seed", None)))
    for key, value in (*shortcuts, ("out", args.out)):
        if value is not None:
            out.append(f"{key}={value}")
    out += [f"{k}={v}" for k, v in extra.items() if v is not None]
    return out


class ArgumentParser(argparse.ArgumentParser):
    """argparse with usage errors raised as :class:`ConfigError` (one line, exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{self.prog}: {message}")


def training_parser(prog: str, description: str, reward_help: str) -> ArgumentParser:
    """The parser of a training command: config options, ``--reward`` and the run options."""
    p = ArgumentParser(prog=prog, description=description)
    add_config_args(p)
    p.add_argument("--reward", help=reward_help)
    add_run_args(p)
    return p


# Terminal escape sequences (colours, cursor moves, titles) and the other control characters: a
# message quoting a library's coloured hint, or a path or name with an ESC in it, would
# otherwise drive the terminal. Tabs and line breaks are whitespace and are joined as such.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window titles, hyperlinks
    r"|\x1b[0-~]?"  # other two-character escapes (ESC c resets), a lone ESC
    r"|[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]"  # other control characters
)


def one_line(message: str) -> str:
    """``message`` with its lines joined and terminal escape sequences and control characters
    removed, so that an error is always one plain line on stderr."""
    plain = _ESCAPES.sub("", message).replace("\t", " ")
    return " ".join(line.strip() for line in plain.splitlines() if line.strip())


def print_error(message: str) -> None:
    """``error: <message>`` on stderr in one write, so that lines from several processes sharing
    the stream (torchrun ranks) never interleave (``print`` writes the newline separately)."""
    sys.stderr.write(f"error: {one_line(message)}\n")
    sys.stderr.flush()


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main``; RlmixError -> one line on stderr and its exit code, unless ``--debug``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        return main(argv)
    except RlmixError as e:
        if debug:
            traceback.print_exc()
        print_error(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        print_error("interrupted")
        return 130
