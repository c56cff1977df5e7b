"""What every session store shares: the entry, the index, :class:`BaseStore`.

:class:`BaseStore` builds ``load``/``save``/``delete``/``index``/
``set_current``/``lock`` on three primitives a subclass supplies:
``_read(key)``, ``_write(key, text)`` and ``_remove(key)``, where a key is a
DID or ``index`` and a text is compact JSON.

An entry, one per DID, as compact JSON::

    {"v": 1, "did": "did:plc:...", "handle": "alice.test",
     "pds_url": "https://...", "access_jwt": "...", "refresh_jwt": "...",
     "access_exp": 1733330000, "refresh_exp": 1741100000,
     "last_used": 1733320000.5, "service": "https://...", "email": "..."}

Times are epoch seconds (UTC). ``did``, ``handle``, ``pds_url`` and both JWTs
are required; the rest may be None or absent, and unknown keys are kept.

The index, under the key ``index``::

    {"v": 1, "current": "did:plc:...", "accounts":
     {"did:plc:...": {"handle": "alice.test", "pds_url": "https://..."}}}

Anything else read back (not JSON, another version, a foreign dict, too
big) is ignored with one WARNING line naming the DID and the reason, never
the content.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from atnb import _lock
from atnb.errors import StoreError

logger = logging.getLogger("atnb.store")

ENTRY_VERSION = 1
INDEX_KEY = "index"

MAX_ENTRY_CHARS = 2000
"""Largest entry written or read. Windows' credential store caps a secret at
2560 bytes of UTF-16 (1280 characters); a real entry with two devnet JWTs is
about 890 (measured in tests/test_persistence.py). A write the keyring
refuses makes :class:`~atnb.store.KeyringStore` fall back to memory."""

MAX_INDEX_CHARS = 64_000
"""Largest index read back (about 110 characters per account). In the
keyring, an index longer than one item allows is kept in numbered chunks
(:data:`atnb.store.INDEX_CHUNK_CHARS`)."""

REQUIRED = ("did", "handle", "pds_url", "access_jwt", "refresh_jwt")


class Entry(dict):
    """A stored entry as read back: a dict whose ``repr`` hides the JWTs."""

    def __repr__(self) -> str:
        shown = {k: "<hidden>" if k in SECRET_KEYS else v for k, v in self.items()}
        return f"Entry({shown!r})"


SECRET_KEYS = ("access_jwt", "refresh_jwt")


def dump(value: dict) -> str:
    """Compact JSON: no spaces, keys in a stable order."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def empty_index() -> dict:
    """An index with no account."""
    return {"v": ENTRY_VERSION, "current": None, "accounts": {}}


def check_entry(did: str, entry: dict) -> dict:
    """Validate an entry before saving it; returns it with ``v`` set.

    Raises :class:`StoreError` (naming fields, never values) when a required
    field is missing, the DID does not match, or the entry is too big.
    """
    if not isinstance(did, str) or not did.startswith("did:"):
        raise StoreError("A stored session must be keyed by a DID")
    entry = {**entry, "v": ENTRY_VERSION, "did": entry.get("did", did)}
    if entry["did"] != did:
        raise StoreError(f"The entry's DID does not match the key {did}")

    missing = [k for k in REQUIRED if not isinstance(entry.get(k), str)]
    if missing:
        raise StoreError(f"The session entry for {did} lacks {', '.join(missing)}")
    size = len(dump(entry))
    if size > MAX_ENTRY_CHARS:
        raise StoreError(
            f"The session entry for {did} is {size} characters, over the "
            f"{MAX_ENTRY_CHARS} some keyrings accept",
            hint="Use store='file' or store='memory' for this session.",
        )
    return entry


def parse_entry(text: str | None, did: str, *, where: str = "") -> dict | None:
    """Read an entry back; None (with a warning) unless it is a usable one."""
    if text is None:
        return None
    value, problem = _load(text, MAX_ENTRY_CHARS)
    if problem is None:
        missing = [k for k in REQUIRED if not isinstance(value.get(k), str)]
        if missing:
            problem = f"it lacks {', '.join(missing)}"
        elif value["did"] != did:
            problem = "it belongs to another DID"
    if problem is not None:
        _ignore(did, problem, where)
        return None
    return Entry(value)


def parse_index(text: str | None, where: str = "") -> dict:
    """Read the index back; an empty index (with a warning) when unusable."""
    if text is None:
        return empty_index()
    value, problem = _load(text, MAX_INDEX_CHARS)
    accounts = value.get("accounts") if problem is None else None
    current = value.get("current") if problem is None else None
    if problem is None and not isinstance(accounts, dict):
        problem = "it has no account list"
    elif problem is None and not (current is None or isinstance(current, str)):
        problem = "its current account is not a DID"
    if problem is not None:
        _ignore(INDEX_KEY, problem, where)
        return empty_index()

    clean = {
        did: {"handle": info.get("handle"), "pds_url": info.get("pds_url")}
        for did, info in accounts.items()
        if isinstance(did, str) and did.startswith("did:") and isinstance(info, dict)
    }
    if current not in clean:
        current = None
    return {"v": ENTRY_VERSION, "current": current, "accounts": clean}


def _load(text: Any, limit: int) -> tuple[dict, str | None]:
    """Parse and check size and version; returns (value, problem or None)."""
    if not isinstance(text, str):
        return {}, "it is not text"
    if len(text) > limit:
        return {}, f"it is too big ({len(text)} characters)"
    try:
        value = json.loads(text)
    except ValueError:
        return {}, "it is not valid JSON"
    if not isinstance(value, dict) or "v" not in value:
        return {}, "it was not written by atnb"
    if value["v"] != ENTRY_VERSION:
        return {}, f"it has another format version (atnb reads {ENTRY_VERSION})"
    return value, None


def _ignore(key: str, problem: str, where: str) -> None:
    store = f" in the {where} store" if where else ""
    logger.warning(
        "ignoring the stored session for %s%s: %s; log in again to replace it",
        key,
        store,
        problem,
    )


class BaseStore:
    """Entries and index over ``_read``, ``_write`` and ``_remove``.

    The index is cached in this process and re-read from the backend inside
    the index lock before every change, so two processes adding accounts do
    not lose each other's.
    """

    name = "base"

    def __init__(self) -> None:
        self._index_cache: dict | None = None
        self._guard = threading.RLock()

    def _read(self, key: str) -> str | None:
        raise NotImplementedError

    def _write(self, key: str, text: str) -> None:
        raise NotImplementedError

    def _remove(self, key: str) -> None:
        raise NotImplementedError

    def _lock_dir(self) -> Path | None:
        return None  # the per-user default of atnb._lock

    def load(self, did: str) -> dict | None:
        """The entry for ``did``; None when absent, corrupt or foreign."""
        return parse_entry(self._read(did), did, where=self.name)

    def save(self, did: str, entry: dict) -> None:
        """Write the entry for ``did`` and list the account in the index.

        The first account saved becomes the current one when none is.
        """
        entry = check_entry(did, entry)
        self._write(did, dump(entry))
        logger.info("session for %s saved in the %s store", did, self.name)

        wanted = {"handle": entry["handle"], "pds_url": entry["pds_url"]}
        index = self.index()
        if index["accounts"].get(did) == wanted and index["current"]:
            return

        def add(fresh: dict) -> None:
            fresh["accounts"][did] = wanted
            fresh["current"] = fresh["current"] or did

        self._update_index(add)

    def delete(self, did: str) -> None:
        """Remove the entry for ``did`` and its line in the index."""
        self._remove(did)
        logger.info("session for %s cleared from the %s store", did, self.name)

        index = self.index()
        if did not in index["accounts"] and index["current"] != did:
            return

        def drop(fresh: dict) -> None:
            fresh["accounts"].pop(did, None)
            if fresh["current"] == did:
                fresh["current"] = None

        self._update_index(drop)

    def index(self) -> dict:
        """``{"v": 1, "current": did|None, "accounts": {did: {handle, pds_url}}}``."""
        with self._guard:
            if self._index_cache is None:
                self._index_cache = parse_index(self._read(INDEX_KEY), self.name)
            return _copy_index(self._index_cache)

    def set_current(self, did: str | None) -> None:
        """Mark ``did`` as the account ``resume()`` picks by default."""
        if self.index()["current"] == did:
            return

        def mark(fresh: dict) -> None:
            fresh["current"] = did

        self._update_index(mark)

    def lock(self, did: str) -> AbstractContextManager:
        """The cross-process lock to hold while refreshing ``did``'s session."""
        return _lock.refresh_lock(did, self._lock_dir)

    def forget_cache(self) -> None:
        """Drop the cached index (the next read asks the backend)."""
        with self._guard:
            self._index_cache = None

    def _update_index(self, change: Callable[[dict], None]) -> None:
        with self.lock(INDEX_KEY), self._guard:
            fresh = parse_index(self._read(INDEX_KEY), self.name)
            change(fresh)
            self._write(INDEX_KEY, dump(fresh))
            self._index_cache = fresh


def _copy_index(index: dict) -> dict:
    accounts = {did: dict(info) for did, info in index["accounts"].items()}
    return {"v": index["v"], "current": index["current"], "accounts": accounts}
