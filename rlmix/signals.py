"""SIGINT / SIGTERM as a flag that training polls between steps, so a run stops cleanly."""

from __future__ import annotations

import signal

from rlmix.errors import RlmixError


class Interrupted(RlmixError):
    """SIGINT or SIGTERM arrived; the run stopped at a step boundary (exit 130 / 143)."""

    exit_code = 130


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
        return self.signum is not None

    def check(self, kept: bool = True) -> None:
        """Raise :class:`Interrupted` (exit 128 + signal number) if a signal arrived; ``kept``:
        whether a checkpoint to resume from exists (none before the first epoch's)."""
        if self.signum is not None:
            code = 130 if self.signum == signal.SIGINT else 128 + self.signum
            name = signal.Signals(self.signum).name
            err = Interrupted(
                f"stopped by {name}; the last epoch's checkpoint is kept (continue with --resume)"
                if kept
                else f"stopped by {name} before the first checkpoint: nothing to resume (run "
                "the command again to start over)"
            )
            err.exit_code = code
            raise err


__all__ = ["Interrupted", "StopFlag"]
