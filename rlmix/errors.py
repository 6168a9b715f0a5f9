"""Exceptions that the command-line tools turn into one readable line and an exit code."""


class RlmixError(Exception):
    """A failure the user can act on (bad data, NaN loss, unreadable checkpoint): exit code 1."""

    exit_code = 1


class ConfigError(RlmixError):
    """A usage error (bad config key, type, range, name or path): exit code 2."""

    exit_code = 2
