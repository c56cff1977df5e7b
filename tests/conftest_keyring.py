"""Fixtures for session stores: a real Secret Service, private folders.

Registered from tests/conftest.py with ``pytest_plugins``. Fixtures:

    secret_service   (session) a private D-Bus bus + unlocked gnome-keyring;
                     skips when dbus-daemon or gnome-keyring-daemon is missing
    real_keyring     (function) points ``keyring`` and ``atnb.settings.store``
                     at that keyring (this process, and subprocesses given the
                     environment it yields), asserts the backend is
                     keyring.backends.SecretService, and deletes every
                     ``atnb`` item afterwards
    store_dirs       (function) private XDG_STATE_HOME / XDG_RUNTIME_DIR /
                     ATNB_STORE_PATH, so lock and token files stay in tmp

and, for every test, a clean slate of shared stores (the process-wide
memory store, the keyring store's fallback state and warned-once flag).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.secret_service import (
    SecretService,
    SecretServiceUnavailable,
    missing_programs,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _fresh_session_stores() -> Iterator[None]:
    """No session kept in memory leaks from one test into the next."""
    yield
    store = sys.modules.get("atnb.store")
    if store is not None:
        store._reset()


@pytest.fixture(scope="session")
def secret_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecretService]:
    """A private Secret Service for the whole run (about 0.1 s to start)."""
    missing = missing_programs()
    if missing:
        pytest.skip(f"no {', '.join(missing)}: apt-get install -y dbus gnome-keyring")
    service = SecretService(tmp_path_factory.mktemp("secret-service"))
    try:
        service.start()
    except SecretServiceUnavailable as exc:
        pytest.skip(f"Secret Service did not start: {exc}")
    yield service
    service.stop()


@pytest.fixture
def store_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Private state, runtime and file-store folders for this test."""
    import atnb
    import atnb.store

    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_RUNTIME_DIR": str(runtime),
        "ATNB_STORE_PATH": str(tmp_path / "state" / "atnb" / "sessions"),
        "PYTHONPATH": str(REPO),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(atnb.settings, "store_path", Path(env["ATNB_STORE_PATH"]))
    atnb.store._reset()
    yield env
    atnb.store._reset()


@pytest.fixture
def real_keyring(
    secret_service: SecretService,
    store_dirs: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, str]]:
    """This process's keyring on the private Secret Service.

    Yields the environment a subprocess needs to share it (with
    ``store_dirs``'s folders, so locks are shared too).
    """
    import keyring
    import keyring.core

    import atnb

    env = {**store_dirs, **secret_service.env, "ATNB_STORE": "keyring"}
    env["XDG_RUNTIME_DIR"] = store_dirs["XDG_RUNTIME_DIR"]  # locks stay per test
    for name in ("DBUS_SESSION_BUS_ADDRESS", "XDG_DATA_HOME", "ATNB_STORE"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.setattr(atnb.settings, "store", "keyring")
    monkeypatch.delenv("PYTHON_KEYRING_BACKEND", raising=False)
    env.pop("PYTHON_KEYRING_BACKEND", None)

    previous = keyring.get_keyring()
    keyring.core.init_backend()
    backend = keyring.get_keyring()
    assert type(backend).__module__ == "keyring.backends.SecretService", backend
    _clear_atnb_items(backend)
    yield env
    _clear_atnb_items(backend)
    keyring.set_keyring(previous)


def _clear_atnb_items(backend: object) -> None:
    collection = backend.get_preferred_collection()
    for item in collection.search_items({"service": "atnb"}):
        item.delete()


def subprocess_env(extra: dict[str, str]) -> dict[str, str]:
    """``os.environ`` plus ``extra``, without a forced keyring backend."""
    env = {**os.environ, **extra}
    env.pop("PYTHON_KEYRING_BACKEND", None)
    return env
