"""SIGINT / SIGTERM as a flag that training polls between steps, so a run stops cleanly."""

from __future__ import annotations

import signal
from typing import Any

from rlmix.errors import RlmixError

_shared: Any = None  # a shared int a study's worker process polls (rlmix.launch)


class Interrupted(RlmixError):
    """SIGINT or SIGTERM arrived; the run stopped at a step boundary (exit 130 / 143)."""

    exit_code = 130


def share_stop(value: Any) -> None:
    """Make every :class:`StopFlag` of this process stop when ``value`` (a shared
    ``multiprocessing`` int) holds a signal number: how a study stops its worker processes, the
    runs they are in and the runs they would start next alike."""
    global _shared
    _shared = value


def shared_signum() -> int | None:
    """The signal number the study set in :func:`share_stop`'s value, if any."""
    return (_shared.value or None) if _shared is not None else None


def interrupted(signum: int, message: str) -> Interrupted:
    """:class:`Interrupted` with ``message`` and the exit status of ``signum`` (130, 143...)."""
    err = Interrupted(message)
    err.exit_code = 130 if signum == signal.SIGINT else 128 + signum
    return err


class StopFlag:
    """Turn SIGINT/SIGTERM into a flag; a second signal raises ``KeyboardInterrupt`` at once.

    Use as a context manager around training; poll :attr:`stopped`, then call :meth:`check`.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    def __enter__(self) -> StopFlag:
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum

    @property
    def stopped(self) -> bool:
        """A signal arrived, or the study this process works for was stopped."""
        if self.signum is None:
            self.signum = shared_signum()
        return self.signum is not None

    def check(self, kept: bool = True) -> None:
        """Raise :class:`Interrupted` (exit 128 + signal number) if a signal arrived; ``kept``:
        whether a checkpoint to resume from exists (none before the first epoch's)."""
        if self.stopped:
            name = signal.Signals(self.signum).name
            raise interrupted(
                self.signum,
                f"stopped by {name}; the last epoch's checkpoint is kept (continue with --resume)"
                if kept
                else f"stopped by {name} before the first checkpoint: nothing to resume (run "
                "the command again to start over)",
            )


__all__ = ["Interrupted", "StopFlag", "interrupted", "share_stop", "shared_signum"]
