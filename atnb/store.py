"""Where sessions are kept between kernels: keyring, file or memory.

A store maps a DID to one small versioned entry (both JWTs, handle, PDS URL,
expiries, last use) and keeps an index of the stored accounts with the
current one marked. Entries are keyed by DID, never by handle: handles
change.

    KeyringStore   the default: the OS keyring via ``keyring`` (service
                   ``atnb``, username = DID, the index under ``index``);
                   falls back to memory, warning once, when no keyring works
    FileStore      opt-in (``ATNB_STORE=file``): one 0600 JSON file per DID
                   in a 0700 folder, written atomically
    MemoryStore    one dict per process; gone with the kernel

The session writes the entry after login, after every refresh (before the
next request uses the new tokens) and on use, and deletes it on ``expired``
and logout. A refresh runs under ``store.lock(did)``, a cross-process lock,
and re-reads the entry inside it (see :mod:`atnb._lock`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from atnb import _lock
from atnb._storebase import INDEX_KEY, BaseStore
from atnb.config import settings
from atnb.errors import StoreError

__all__ = [
    "FileStore",
    "KeyringStore",
    "MemoryStore",
    "NoKeyringWarning",
    "NullStore",
    "SessionStore",
    "accounts",
    "find_account",
    "forget",
    "get_store",
    "on_forget",
]

logger = logging.getLogger(__name__)

SERVICE = "atnb"
"""The keyring service name; the username is the DID (or ``index``)."""


@runtime_checkable
class SessionStore(Protocol):
    """What the session needs from a store; plug in your own object."""

    name: str

    def load(self, did: str) -> dict | None: ...
    def save(self, did: str, entry: dict) -> None: ...
    def delete(self, did: str) -> None: ...
    def index(self) -> dict: ...
    def set_current(self, did: str | None) -> None: ...
    def lock(self, did: str) -> AbstractContextManager: ...


class NoKeyringWarning(UserWarning):
    """No usable keyring: sessions are kept in memory only."""


class NullStore:
    """Persistence switched off: nothing is kept (``Session(store=None)``)."""

    name = "none"

    def load(self, did: str) -> dict | None:
        return None

    def save(self, did: str, entry: dict) -> None:
        return None

    def delete(self, did: str) -> None:
        return None

    def index(self) -> dict:
        return {"v": 1, "current": None, "accounts": {}}

    def set_current(self, did: str | None) -> None:
        return None

    def lock(self, did: str) -> AbstractContextManager:
        return contextlib.nullcontext()


class MemoryStore(BaseStore):
    """Sessions in this process only; every ``MemoryStore`` shares one dict."""

    name = "memory"
    _data: dict[str, str] = {}  # noqa: RUF012 - process-wide on purpose
    _shared_guard = threading.RLock()

    def __init__(self) -> None:
        super().__init__()
        self._guard = MemoryStore._shared_guard

    def _read(self, key: str) -> str | None:
        return self._data.get(key)

    def _write(self, key: str, text: str) -> None:
        self._data[key] = text

    def _remove(self, key: str) -> None:
        self._data.pop(key, None)

    def index(self) -> dict:
        self._index_cache = None  # the dict is the truth; reading it is free
        return super().index()

    def lock(self, did: str) -> AbstractContextManager:
        """A lock for this process's threads (no other process sees memory)."""
        return _lock.thread_lock(f"memory:{did}")

    @classmethod
    def clear(cls) -> None:
        """Forget every session kept in memory (tests use this)."""
        cls._data.clear()


class FileStore(BaseStore):
    """One owner-only JSON file per DID (mode 0600) in a 0700 folder.

    Opt in with ``store="file"`` or ``ATNB_STORE=file``; the folder is
    ``ATNB_STORE_PATH`` (default ``~/.local/state/atnb/sessions``). Files hold
    the JWTs in plain text, protected by file permissions only.
    """

    name = "file"

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.path = Path(path) if path is not None else Path(settings.store_path)

    def __repr__(self) -> str:
        return f"FileStore({str(self.path)!r})"

    def _file(self, key: str) -> Path:
        return self.path / f"{_lock.quote_key(key)}.json"

    def _read(self, key: str) -> str | None:
        try:
            return self._file(key).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            logger.warning("cannot read %s (%s); ignoring it", key, type(exc).__name__)
            return None

    def _write(self, key: str, text: str) -> None:
        folder = _lock.private_dir(self.path)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self._file(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _remove(self, key: str) -> None:
        self._file(key).unlink(missing_ok=True)

    def _lock_dir(self) -> Path:
        return _lock.private_dir(self.path / ".locks")


class KeyringStore(BaseStore):
    """Sessions in the OS keyring (Secret Service, macOS Keychain, Windows).

    When no usable keyring exists (keyring's ``fail`` or ``null`` backend, a
    locked or missing Secret Service, a plain-text file backend), this store
    keeps sessions in memory instead, warns once with the fix, and writes no
    file. ``name`` is then ``"memory"``.

    Args:
        backend: a keyring backend object; default ``keyring.get_keyring()``.
    """

    def __init__(self, backend: Any = None) -> None:
        super().__init__()
        self._backend = backend
        self._checked = False
        self._fallback = False
        self._memory = MemoryStore()
        self._index_chunks = 0

    @property
    def name(self) -> str:  # type: ignore[override]
        return "memory" if self._fallback else "keyring"

    def __repr__(self) -> str:
        return f"KeyringStore(name={self.name!r})"

    @property
    def backend(self) -> Any:
        """The keyring backend in use, or None after falling back to memory."""
        if not self._checked:
            if self._backend is None:
                import keyring

                self._backend = keyring.get_keyring()
            self._checked = True
            self._check_backend(self._backend)
        return None if self._fallback else self._backend

    def _check_backend(self, backend: Any) -> None:
        kind = f"{type(backend).__module__}.{type(backend).__name__}"
        if kind.startswith(("keyring.backends.fail.", "keyring.backends.null.")):
            self._fall_back(kind)
        elif kind.startswith("keyrings.alt.file.Plaintext"):
            self._fall_back(f"{kind} writes tokens to a plain file")

    def _use(self, call: Callable[[Any], Any], fallback: Callable[[], Any]) -> Any:
        backend = self.backend
        if backend is None:
            return fallback()
        try:
            return call(backend)
        except Exception as exc:  # KeyringLocked, NoKeyringError, D-Bus gone...
            self._fall_back(type(exc).__name__)
            return fallback()

    def lock(self, did: str) -> AbstractContextManager:
        """The cross-process lock; a thread lock once sessions live in memory."""
        if self.backend is None:
            return self._memory.lock(did)
        return super().lock(did)

    def _read(self, key: str) -> str | None:
        text = self._read_item(key)
        count = _chunk_count(text) if key == INDEX_KEY else None
        if key == INDEX_KEY:
            self._index_chunks = count or 0  # the index is re-read before writes
        if count is None:
            return text
        parts = [self._read_item(f"{key}.{n}") for n in range(1, count + 1)]
        return None if None in parts else "".join(parts)

    def _write(self, key: str, text: str) -> None:
        # Windows caps one secret near 1280 characters: a long index is kept
        # in numbered chunks behind a small head item.
        old = self._index_chunks if key == INDEX_KEY else 0
        parts = [text]
        if key == INDEX_KEY and len(text) > INDEX_CHUNK_CHARS:
            size = INDEX_CHUNK_CHARS
            parts = [text[i : i + size] for i in range(0, len(text), size)]
            for n, part in enumerate(parts, 1):
                self._write_item(f"{key}.{n}", part)
            self._write_item(key, json.dumps({CHUNKS: len(parts)}))
        else:
            self._write_item(key, text)
        for n in range(len(parts) + 1 if len(parts) > 1 else 1, old + 1):
            self._remove(f"{key}.{n}")
        if key == INDEX_KEY:
            self._index_chunks = len(parts) if len(parts) > 1 else 0

    def _read_item(self, key: str) -> str | None:
        return self._use(
            lambda backend: backend.get_password(SERVICE, key),
            lambda: self._memory._read(key),
        )

    def _write_item(self, key: str, text: str) -> None:
        self._use(
            lambda backend: backend.set_password(SERVICE, key, text),
            lambda: self._memory._write(key, text),
        )

    def _remove(self, key: str) -> None:
        import keyring.errors

        def remove(backend: Any) -> None:
            # PasswordDeleteError: nothing was stored under that name.
            with contextlib.suppress(keyring.errors.PasswordDeleteError):
                backend.delete_password(SERVICE, key)

        self._use(remove, lambda: self._memory._remove(key))

    def _fall_back(self, reason: str) -> None:
        self._fallback = True
        self._index_cache = None
        _warn_no_keyring(reason)


INDEX_CHUNK_CHARS = 1000
"""Longest keyring item the index is written in (Windows' cap is 1280)."""
CHUNKS = "atnb-index-chunks"


def _chunk_count(text: str | None) -> int | None:
    """How many chunks a head item announces, or None for a whole index."""
    if not text or CHUNKS not in text:
        return None
    try:
        count = json.loads(text).get(CHUNKS)
    except (ValueError, AttributeError):
        return None
    return count if isinstance(count, int) and 0 < count < 1000 else None


_warned = False
_NO_KEYRING = (
    "No usable keyring ({reason}): the session is kept in memory and will not "
    "survive a kernel restart. To keep it, install and unlock a keyring "
    "(e.g. gnome-keyring), or opt in to a token file with ATNB_STORE=file."
)


def _warn_no_keyring(reason: str) -> None:
    global _warned
    if _warned:
        return
    _warned = True
    message = _NO_KEYRING.format(reason=reason)
    # One user-facing warning; the log line stays at INFO so that a notebook
    # without logging set up does not print the same text twice.
    logger.info("%s", message)
    warnings.warn(message, NoKeyringWarning, stacklevel=_caller_level())


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside atnb (the user's call)."""
    import sys

    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


_stores: dict[Any, BaseStore] = {}
_stores_guard = threading.Lock()


def get_store(name_or_obj: str | SessionStore | None = None) -> SessionStore:
    """The store to use: by name (``keyring``, ``file``, ``memory``) or as is.

    With no argument, ``atnb.settings.store`` decides (env ``ATNB_STORE``).
    Names give one shared store per process (per folder for ``file``).
    """
    if name_or_obj is None:
        name_or_obj = settings.store
    if not isinstance(name_or_obj, str):
        return name_or_obj

    name = name_or_obj.strip().lower()
    key: Any = (name, str(settings.store_path)) if name == "file" else name
    factories: dict[str, Callable[[], BaseStore]] = {
        "keyring": KeyringStore,
        "file": FileStore,
        "memory": MemoryStore,
    }
    if name not in factories:
        raise StoreError(
            f"Unknown session store {name_or_obj!r}",
            hint="Use 'keyring', 'file' or 'memory' (or ATNB_STORE=...).",
        )
    with _stores_guard:
        if key not in _stores:
            _stores[key] = factories[name]()
        return _stores[key]


def _reset() -> None:
    """Forget shared stores and the warned-once flag (tests use this)."""
    global _warned
    with _stores_guard:
        _stores.clear()
    _warned = False
    MemoryStore.clear()


def _normal_handle(text: str) -> str:
    return text.strip().lstrip("@").rstrip(".").lower()


def _fresh(store: Any) -> Any:
    """Drop a cached index: another kernel may have changed it."""
    forget_cache = getattr(store, "forget_cache", None)
    if callable(forget_cache):
        forget_cache()
    return store


def find_account(account: str | None = None, store: Any = None) -> str | None:
    """The DID stored for ``account`` (handle or DID; None: the current one).

    Returns None when nothing is stored for it. A DID not in the index is
    returned when its entry exists.
    """
    store = _fresh(get_store(store))
    index = store.index()
    if account is None:
        return index["current"]

    text = account.strip()
    if text.startswith("did:"):
        if text in index["accounts"] or store.load(text) is not None:
            return text
        return None
    wanted = _normal_handle(text)
    for did, info in index["accounts"].items():
        if _normal_handle(str(info.get("handle") or "")) == wanted:
            return did
    return None


def accounts(store: Any = None) -> list[dict]:
    """The stored accounts, most recently used first; never any JWT.

    Each item: ``handle``, ``did``, ``pds_url``, ``current`` (bool),
    ``last_used`` (epoch seconds as stored, or None).
    """
    store = _fresh(get_store(store))
    index = store.index()
    rows = []
    for did, info in index["accounts"].items():
        entry = store.load(did) or {}
        rows.append(
            {
                "handle": entry.get("handle") or info.get("handle"),
                "did": did,
                "pds_url": entry.get("pds_url") or info.get("pds_url"),
                "current": did == index["current"],
                "last_used": entry.get("last_used"),
            }
        )
    rows.sort(key=lambda row: _number(row["last_used"]), reverse=True)
    return rows


def _number(value: Any) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok else 0.0


_forget_hooks: list[Callable[[str], None]] = []


def on_forget(callback: Callable[[str], None]) -> Callable[[str], None]:
    """Call ``callback(did)`` whenever :func:`forget` removes an account.

    The session module uses this to stop a live session of that account in
    this process from saving it again at its next refresh.
    """
    _forget_hooks.append(callback)
    return callback


def forget(account: str, store: Any = None) -> None:
    """Remove ``account`` (handle or DID) from the store: entry and index.

    Does nothing when nothing is stored for it. The server-side session is
    not revoked; ``session.logout()`` does that.
    """
    store = get_store(store)
    did = find_account(account, store)
    if did is None and account.strip().startswith("did:"):
        did = account.strip()
    if did is None:
        logger.info("nothing stored for %s in the %s store", account, store.name)
        return
    store.delete(did)
    for callback in list(_forget_hooks):
        try:
            callback(did)
        except Exception as exc:  # a hook must not undo the forget
            logger.warning("forget hook failed: %s", type(exc).__name__)
