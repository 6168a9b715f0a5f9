"""Atomic file writes: every file rlmix writes (checkpoints, metrics, configs, tables, plots).

A write goes to a temporary file in the same directory, is fsynced, then renamed into place with
``os.replace``, so a run killed mid-write leaves the previous file intact and a reader never sees
half a file. This module depends on nothing else in rlmix but its errors, so that the config and
the checkpoints both write through it without importing each other.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlmix.errors import ConfigError, RlmixError


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, then rename it into place.

    Raises:
        ConfigError: the directory cannot be created or written to.
        RlmixError: the write failed (disk full, quota, I/O error); the previous file is kept.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise ConfigError(f"cannot write to '{path.parent}': {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):  # disk full, quota, I/O error: the previous file is intact
            raise RlmixError(
                f"cannot write '{path}': {e.strerror or e}; the previous file is kept"
            ) from e
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def check_writable(directory: str | os.PathLike) -> Path:
    """Create ``directory`` if needed and make sure files can be written there.

    Raises:
        ConfigError: it cannot be created or written to.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise ConfigError(
            f"output directory '{directory}' is not writable: {e.strerror or e}"
        ) from e
    return directory


__all__ = ["atomic_write", "atomic_write_json", "atomic_write_text", "check_writable"]
