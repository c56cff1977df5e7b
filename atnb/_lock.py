"""Cross-process locks that serialise refreshes of one stored session.

Two kernels that share a stored session must not both spend the same
refresh JWT. The session takes :func:`refresh_lock` around a refresh,
re-reads the store inside it, and refreshes only when the stored tokens
are still the ones it holds.

Lock files live in a per-user folder (mode 0700): ``$XDG_RUNTIME_DIR/atnb``
when that is set, else ``$XDG_STATE_HOME/atnb/locks`` (default
``~/.local/state/atnb/locks``). A lock file holds no secret; its name is
the quoted DID.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

from atnb.errors import StoreError

__all__ = [
    "LOCK_TIMEOUT",
    "lock_dir",
    "private_dir",
    "quote_key",
    "refresh_lock",
    "thread_lock",
]

logger = logging.getLogger(__name__)

LOCK_TIMEOUT = 60.0
"""Seconds to wait for another process's refresh before giving up."""

_thread_locks: dict[str, threading.RLock] = {}
_thread_locks_guard = threading.Lock()
_held = threading.local()  # .paths: the lock files this thread holds


def quote_key(key: str) -> str:
    """Turn a DID (or ``index``) into a file name safe on every OS.

    >>> quote_key("did:plc:abc")
    'did%3Aplc%3Aabc'
    """
    return urllib.parse.quote(key, safe="")


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) as an owner-only folder, mode 0700.

    An existing folder we own with wider permissions is tightened; one owned
    by someone else raises :class:`StoreError`.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.name != "posix":  # pragma: no cover - Windows ACLs are per user
        return path

    info = path.stat()
    if info.st_uid != os.getuid():
        raise StoreError(
            f"The folder {path} belongs to another user",
            hint="Set ATNB_STORE_PATH to a folder of your own.",
        )
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def lock_dir() -> Path:
    """The per-user folder for lock files (created on first use)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return private_dir(Path(runtime) / "atnb")
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return private_dir(Path(state) / "atnb" / "locks")


@contextlib.contextmanager
def refresh_lock(
    key: str, folder: Path | Callable[[], Path] | None = None
) -> Iterator[None]:
    """Hold the cross-process lock for ``key`` (a DID) for the ``with`` block.

    ``folder`` (or a function that makes it) holds the lock files; None:
    :func:`lock_dir`. Re-entrant in one thread. Raises :class:`StoreError` when another
    process holds it for longer than :data:`LOCK_TIMEOUT` seconds. When no
    lock file can be made (an unwritable home on a server), it serialises
    this process's threads only and warns once: a session keeps working.
    """
    import filelock

    try:
        where = folder() if callable(folder) else folder
        path = (where or lock_dir()) / f"{quote_key(key)}.lock"
    except (OSError, StoreError) as exc:  # e.g. a read-only home on a server
        _warn_no_lock_dir(exc)
        with thread_lock(f"nofolder:{key}"):
            yield
        return

    with thread_lock(str(path)):
        held = _held.__dict__.setdefault("paths", set())
        if path in held:  # this thread has it already
            yield
            return

        file_lock = filelock.FileLock(path, timeout=LOCK_TIMEOUT, mode=0o600)
        try:
            file_lock.acquire()
        except filelock.Timeout as exc:
            raise StoreError(
                f"Another process has held the session lock for {key} for "
                f"more than {LOCK_TIMEOUT:.0f} s",
                hint="Check for a stuck kernel, then run this again.",
            ) from exc
        except OSError as exc:
            _warn_no_lock_dir(exc)
            yield
            return
        held.add(path)
        try:
            yield
        finally:
            held.discard(path)
            file_lock.release()


_warned_no_lock_dir = False


def _warn_no_lock_dir(exc: Exception) -> None:
    global _warned_no_lock_dir
    if not _warned_no_lock_dir:
        _warned_no_lock_dir = True
        logger.warning(
            "cannot create session lock files (%s: %s); two kernels sharing a "
            "session may now refresh it twice. Set XDG_RUNTIME_DIR or "
            "XDG_STATE_HOME to a folder you can write.",
            type(exc).__name__,
            exc,
        )


@contextlib.contextmanager
def thread_lock(name: str) -> Iterator[None]:
    """Serialise threads of this process first (``FileLock`` is per thread)."""
    with _thread_locks_guard:
        lock = _thread_locks.setdefault(name, threading.RLock())
    with lock:
        yield
