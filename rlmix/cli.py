"""Command-line plumbing shared by ``rlmix.train``, ``rlmix.train_agent`` and ``rlmix.compare``."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from rlmix import distributed
from rlmix.errors import ConfigError, RlmixError
from rlmix.locks import hold


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


def run_training(
    train: Callable[..., dict], cfg: object, args: argparse.Namespace, command: str
) -> dict:
    """Join torchrun's process group (if launched by it) and call ``train(cfg, ...)`` with the
    run options of :func:`add_run_args`; progress bars show on rank 0 only. A follower rank
    gets ``{"exit_code": c}`` back: rank 0 reports the run. Every way out leaves the process
    group: together (a barrier first) when the run finished, stopped or met an error every rank
    agreed on; alone when only this rank failed. Rank 0 holds the run directory's lock as
    ``command`` (:mod:`rlmix.locks`): a second process on the same ``--out`` is refused."""
    distributed.setup()
    lock = contextlib.ExitStack()
    try:
        with lock:
            distributed.on_main(
                lambda: lock.enter_context(hold(Path(cfg.out), command, study=False))
            )
            metrics = train(
                cfg,
                resume=args.resume,
                progress=not args.no_progress and distributed.current().is_main,
                stop_after=args.stop_after_epoch,
            )
    except BaseException as e:  # every rank meets an agreed error: leave together
        distributed.teardown(wait=getattr(e, "collective", False))
        raise
    distributed.teardown()
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


def _reports(error: BaseException) -> bool:
    """Whether this process prints ``error``: under torchrun an error every rank raised alike
    (agreed on, handed from rank 0, or met before the ranks joined) is printed by rank 0 only."""
    d = distributed.torchrun_rank()
    if d is None or d[0] == 0:
        return True
    collective = getattr(error, "collective", False) or not distributed.joined()
    return not (collective or isinstance(error, KeyboardInterrupt))


# How long a torchrun rank that leaves an error to rank 0 waits for rank 0 to print it and exit.
FOLLOWER_GRACE_S = 10.0


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main``; RlmixError -> one line on stderr and its exit code, unless ``--debug``.

    A torchrun worker then leaves without the interpreter's teardown (``os._exit``, its output
    flushed): the process group was left already, and gloo's threads can otherwise abort the
    process while Python finalises. A rank that leaves rank 0 to report its error first waits
    for it (up to :data:`FOLLOWER_GRACE_S`): torchrun stops every worker once one has failed,
    and rank 0 could otherwise be stopped before it has printed the error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    silent = False
    try:
        code = main(argv)
    except RlmixError as e:
        if debug:
            traceback.print_exc()
        silent = not _reports(e)
        if not silent:
            print_error(str(e))
        code = e.exit_code
    except KeyboardInterrupt as e:
        silent = not _reports(e)
        if not silent:
            print_error("interrupted")
        code = 130
    except SystemExit as e:  # --help, or sys.exit from within
        if distributed.torchrun_rank() is None:
            raise
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        if distributed.torchrun_rank() is None:
            raise
        traceback.print_exc()
        code = 1
    if distributed.torchrun_rank() is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        if silent:  # torchrun stops this rank once rank 0 has left
            try:
                time.sleep(FOLLOWER_GRACE_S)
            except KeyboardInterrupt:
                pass
        os._exit(code)
    return code
