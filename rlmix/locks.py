"""One process at a time in a folder: an advisory lock that ``rlmix.compare`` (and
``rlmix.loop``) holds on a study folder while it runs the study, and every training run
(``rlmix.train``, ``rlmix.train_agent``, a study's run) on its run directory, so that a second
process on the same ``--out`` (another terminal, a queue started twice, a hand-made ``--resume``
of a run a study is training) stops at once with one line instead of writing beside the first.

The lock is ``flock`` on a small file in the folder holding the owner's pid and command. The
system drops it when the owner exits, however it exits (a kill, a crash, a power cut leave no
stale lock), so nothing ever has to remove it. ``rlmix.status`` asks the same file whether a
study is running. Where ``fcntl`` does not exist (Windows) there is no lock and :func:`holder`
knows nothing.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from rlmix.errors import ConfigError
from rlmix.io import check_writable

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".rlmix.lock"


def _owner(fd: int) -> tuple[int | None, str]:
    """The pid and command the lock file records (None and "" while its owner has not written
    them yet)."""
    pid, _, command = os.pread(fd, 256, 0).decode(errors="replace").strip().partition(" ")
    return (int(pid) if pid.isdigit() else None), command


def _take(fd: int, tries: int = 5) -> bool | None:
    """Take the exclusive lock: True, or False when another process holds it (a few short
    retries get past :func:`holder`'s brief look), or None when the file system has no locks."""
    for attempt in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < tries:
                time.sleep(0.05)
        except OSError:  # e.g. ENOLCK on some network file systems
            return None
    return False


@contextlib.contextmanager
def hold(directory: Path, command: str, *, study: bool = True) -> Iterator[None]:
    """Hold ``directory``'s lock while the block runs, as ``command`` (what a refused process is
    told holds it), creating the folder first. Where the folder cannot be locked the block runs
    with a warning. ``study``: the folder is a study, and the refusal says how to watch it
    (``rlmix.status``).

    Raises:
        ConfigError: another process holds it (one line naming its command and pid), or the
            folder cannot be created or written to.
    """
    check_writable(directory)
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        _unlocked(directory, command, e)
        yield
        return
    try:
        taken = _take(fd)
        if taken is False:
            pid, owner = _owner(fd)
            watch = f" (python -m rlmix.status {directory} shows where it is)" if study else ""
            raise ConfigError(
                f"'{directory}' is in use by another {owner or 'rlmix process'}"
                f"{f' (pid {pid})' if pid else ''}: wait for it to stop{watch} or use another --out"
            ) from None
        if taken:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
        else:
            _unlocked(directory, command, None)
        yield
    finally:
        os.close(fd)  # releases the lock


def _unlocked(directory: Path, command: str, error: OSError | None) -> None:
    why = f" ({error.strerror or error})" if error else " (its file system has no locks)"
    warnings.warn(
        f"cannot lock '{directory}'{why}: nothing stops a second {command} on it, so run one at "
        "a time there",
        RuntimeWarning,
        stacklevel=3,
    )


class Holder(NamedTuple):
    """Whether a process holds a directory's lock: ``running`` is None when it cannot be told
    (no lock file: never run by a locking rlmix, or no ``fcntl``); ``pid`` and ``command`` are
    the holder's."""

    running: bool | None
    pid: int | None = None
    command: str = ""


def holder(directory: Path) -> Holder:
    """Who holds ``directory``'s lock now, without taking it."""
    path = directory / LOCK_FILE
    if fcntl is None or not path.is_file():
        return Holder(None)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return Holder(None)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return Holder(True, *_owner(fd))
        except OSError:  # no locks on this file system
            return Holder(None)
        return Holder(False)
    finally:
        os.close(fd)


__all__ = ["LOCK_FILE", "Holder", "hold", "holder"]
