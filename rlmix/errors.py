"""Exceptions that the command-line tools turn into one readable line and an exit code."""


class RlmixError(Exception):
    """A failure the user can act on (bad data, NaN loss, unreadable checkpoint): exit code 1."""

    exit_code = 1


class ConfigError(RlmixError):
    """A usage error (bad config key, type, range, name or path): exit code 2."""

    exit_code = 2


class FollowerExit(RlmixError):
    """A torchrun rank > 0 leaving with the exit status rank 0 stopped it with; rank 0 says why
    (this one prints nothing)."""

    collective = True

    def __init__(self, exit_code: int) -> None:
        super().__init__(f"rank 0 stopped the run with exit status {exit_code}")
        self.exit_code = exit_code
