"""KeyringStore on a real Secret Service (gnome-keyring on a private D-Bus bus)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

import atnb
import atnb.store
from atnb.store import SERVICE, KeyringStore
from tests.test_store import ACCESS, ALICE, BOB, REFRESH, entry


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_entry_lands_in_the_secret_service(real_keyring: dict) -> None:
    import keyring

    store = atnb.store.get_store("keyring")
    store.save(ALICE, entry())
    assert store.name == "keyring"
    assert type(store.backend).__module__ == "keyring.backends.SecretService"

    raw = json.loads(keyring.get_password(SERVICE, ALICE))
    assert raw["v"] == 1 and raw["refresh_jwt"] == REFRESH
    index = json.loads(keyring.get_password(SERVICE, "index"))
    assert index["current"] == ALICE and "access_jwt" not in json.dumps(index)

    looked_up = subprocess.run(
        ["secret-tool", "lookup", "service", SERVICE, "username", ALICE],
        env={**os.environ, **real_keyring},
        capture_output=True,
        text=True,
        timeout=30,
    )
    if looked_up.returncode == 0:  # secret-tool comes with libsecret-tools
        assert json.loads(looked_up.stdout)["did"] == ALICE

    store.delete(ALICE)
    assert keyring.get_password(SERVICE, ALICE) is None
    assert json.loads(keyring.get_password(SERVICE, "index"))["accounts"] == {}


def test_two_processes_share_the_keyring(real_keyring: dict) -> None:
    store = atnb.store.get_store("keyring")
    store.save(ALICE, entry())

    seen = _run(
        f"""
        import json, atnb, atnb.store
        store = atnb.store.get_store()
        print(json.dumps([store.name, store.load({ALICE!r})["refresh_jwt"] ==
                          {REFRESH!r}, atnb.accounts()]))
        store.save({BOB!r}, dict(store.load({ALICE!r}), did={BOB!r},
                                 handle="bob.test"))
        store.set_current({BOB!r})
        """,
        real_keyring,
    )
    name, same, rows = json.loads(seen.stdout)
    assert name == "keyring" and same
    assert [r["did"] for r in rows] == [ALICE]

    # this process sees the other's changes in the public look-ups
    assert atnb.store.find_account() == BOB
    assert {r["did"] for r in atnb.accounts()} == {ALICE, BOB}
    atnb.forget("bob.test")
    assert _run(
        f"import atnb.store; print(atnb.store.get_store().load({BOB!r}))",
        real_keyring,
    ).stdout.split() == ["None"]


def test_index_is_cached_and_writes_are_few(real_keyring: dict) -> None:
    store = KeyringStore()
    backend = store.backend
    calls: list[str] = []
    for method in ("get_password", "set_password", "delete_password"):
        original = getattr(backend, method)

        def counted(*args, _original=original, _method=method):
            calls.append(_method)
            return _original(*args)

        setattr(backend, method, counted)

    store.save(ALICE, entry())  # entry + index (read inside the lock, write)
    assert calls == ["set_password", "get_password", "get_password", "set_password"]
    calls.clear()

    started = time.perf_counter()
    for n in range(5):  # refreshes and uses: one write each, nothing else
        store.save(ALICE, entry(last_used=float(n)))
    per_save = (time.perf_counter() - started) / 5
    assert calls == ["set_password"] * 5
    calls.clear()
    assert store.index()["current"] == ALICE
    assert calls == []

    started = time.perf_counter()
    assert store.load(ALICE)["last_used"] == 4.0
    per_load = time.perf_counter() - started
    print(f"keyring save {per_save * 1000:.1f} ms, load {per_load * 1000:.1f} ms")


def test_no_bus_in_a_fresh_process_warns_once_and_writes_nothing(
    store_dirs: dict, tmp_path
) -> None:
    """C13 for real: a headless process with no D-Bus at all."""
    env = {
        **store_dirs,
        "ATNB_STORE": "keyring",
        "DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent/bus",
    }
    done = _run(
        f"""
        import warnings, keyring, atnb, atnb.store
        warnings.simplefilter("always")
        print(type(keyring.get_keyring()).__module__)
        try:
            atnb.resume()
        except atnb.NotLoggedInError as exc:
            print(type(exc).__name__, str(exc).startswith("No stored session"))
        store = atnb.store.get_store()
        entry = {entry()!r}
        store.save({ALICE!r}, entry)
        assert store.load({ALICE!r})["refresh_jwt"] == entry["refresh_jwt"]
        print(store.name, atnb.accounts()[0]["handle"])
        """,
        env,
    )
    out = done.stdout.split()
    assert out == [
        "keyring.backends.fail",
        "NotLoggedInError",
        "True",
        "memory",
        "alice.test",
    ]
    assert done.stderr.count("No usable keyring") == 1  # one warning
    assert "NoKeyringError" not in done.stderr
    assert not [p for p in tmp_path.rglob("*.json")]
    for secret in (ACCESS, REFRESH):
        assert secret not in done.stdout + done.stderr


@pytest.fixture(autouse=True)
def _no_forced_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTHON_KEYRING_BACKEND", raising=False)


def test_keyrings_alt_is_not_installed() -> None:
    """With keyrings.alt and no bus, keyring would pick a plain-text file."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("keyrings.alt")
    except ModuleNotFoundError:
        spec = None
    assert spec is None


def test_many_accounts_fit_windows_item_cap(real_keyring: dict) -> None:
    import keyring

    store = atnb.store.get_store("keyring")
    dids = [f"did:plc:{n:024d}" for n in range(30)]
    for n, did in enumerate(dids):
        store.save(did, entry(did, handle=f"user{n}.test"))
    items = [keyring.get_password(SERVICE, "index")]
    items += [keyring.get_password(SERVICE, f"index.{n}") for n in range(1, 10)]
    stored = [item for item in items if item is not None]
    assert len(stored) > 2  # a head item and several chunks
    assert max(len(item) for item in stored) <= 1280  # Windows' cap per secret
    fresh = KeyringStore()  # another kernel reads it back whole
    assert set(fresh.index()["accounts"]) == set(dids)

    for did in dids[1:]:
        store.delete(did)
    assert json.loads(keyring.get_password(SERVICE, "index"))["accounts"].keys() == {
        dids[0]
    }
    assert keyring.get_password(SERVICE, "index.1") is None  # old chunks removed
    store.delete(dids[0])
