"""Session stores: memory, file, keyring (real Secret Service), fallback (C13)."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

import atnb
import atnb.store
from atnb._storebase import MAX_ENTRY_CHARS
from atnb.errors import StoreError
from atnb.store import FileStore, KeyringStore, MemoryStore, NoKeyringWarning


def _unsigned_jwt(header: dict, claims: dict, signature: str) -> str:
    """A JWT-shaped placeholder, built at run time (no token is committed)."""
    import base64

    def part(value: dict) -> str:
        raw = json.dumps(value, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}.{signature}"


ACCESS = _unsigned_jwt({"typ": "at+jwt"}, {"sub": "did:plc:aaaa"}, "ACCESS-1-sig")
REFRESH = _unsigned_jwt({"typ": "refresh+jwt"}, {"jti": "x"}, "REFRESH-1-sig")
ALICE = "did:plc:aaaa"
BOB = "did:plc:bbbb"


def entry(did: str = ALICE, handle: str = "alice.test", **extra: object) -> dict:
    return {
        "did": did,
        "handle": handle,
        "pds_url": "http://127.0.0.1:2583",
        "access_jwt": ACCESS,
        "refresh_jwt": REFRESH,
        "access_exp": 1_800_000_000,
        "refresh_exp": 1_810_000_000,
        "last_used": 1_790_000_000.0,
        **extra,
    }


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, store_dirs: dict) -> atnb.store.BaseStore:
    return atnb.store.get_store(request.param)


def test_round_trip_and_index(store: atnb.store.BaseStore) -> None:
    assert store.load(ALICE) is None
    assert store.index() == {"v": 1, "current": None, "accounts": {}}

    store.save(ALICE, entry())
    store.save(BOB, entry(BOB, "bob.test"))
    assert store.load(ALICE) == {**entry(), "v": 1}
    index = store.index()
    assert index["current"] == ALICE  # the first saved becomes current
    assert index["accounts"][BOB] == {
        "handle": "bob.test",
        "pds_url": "http://127.0.0.1:2583",
    }

    store.set_current(BOB)
    assert store.index()["current"] == BOB
    store.delete(BOB)
    assert store.load(BOB) is None
    assert store.index() == {
        "v": 1,
        "current": None,
        "accounts": {
            ALICE: {"handle": "alice.test", "pds_url": "http://127.0.0.1:2583"}
        },
    }
    store.delete(BOB)  # deleting twice is fine


def test_get_store_by_name_object_and_setting(store_dirs: dict, monkeypatch) -> None:
    mine = MemoryStore()
    assert atnb.store.get_store(mine) is mine
    assert atnb.store.get_store("file") is atnb.store.get_store(" FILE ")
    assert atnb.store.get_store("memory").name == "memory"
    monkeypatch.setattr(atnb.settings, "store", "file")
    assert atnb.store.get_store().name == "file"
    assert isinstance(mine, atnb.store.SessionStore)

    with pytest.raises(StoreError, match=r"Unknown session store 'vault'.*'keyring'"):
        atnb.store.get_store("vault")


def test_memory_store_is_process_wide(store_dirs: dict) -> None:
    MemoryStore().save(ALICE, entry())
    assert MemoryStore().load(ALICE)["refresh_jwt"] == REFRESH


def test_file_store_permissions(store_dirs: dict, tmp_path: Path) -> None:
    folder = tmp_path / "sessions"
    store = FileStore(folder)
    store.save(ALICE, entry())
    with store.lock(ALICE):
        pass

    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    names = sorted(p.name for p in folder.iterdir())
    assert names == [".locks", "did%3Aplc%3Aaaaa.json", "index.json"]
    for path in folder.glob("*.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((folder / ".locks").stat().st_mode) == 0o700
    for path in (folder / ".locks").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_file_store_tightens_a_wide_folder_and_leaves_no_temp(tmp_path: Path) -> None:
    folder = tmp_path / "wide"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    store = FileStore(folder)
    for n in range(3):
        store.save(ALICE, entry(last_used=float(n)))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]
    assert json.loads((folder / "did%3Aplc%3Aaaaa.json").read_text())["last_used"] == 2


CORRUPT = {
    "garbage": "{not json",
    "wrong version": json.dumps({**entry(), "v": 2}),
    "foreign dict": json.dumps({"password": "hunter2", "user": "x"}),
    "foreign list": json.dumps([ACCESS, REFRESH]),
    "missing refresh": json.dumps({**entry(), "v": 1, "refresh_jwt": None}),
    "other did": json.dumps({**entry(BOB), "v": 1}),
    "oversized": json.dumps({**entry(), "v": 1, "pad": "x" * MAX_ENTRY_CHARS}),
}


@pytest.mark.parametrize("kind", sorted(CORRUPT))
def test_corrupt_entry_is_ignored_with_one_warning(store, kind: str, caplog) -> None:
    store._write(ALICE, CORRUPT[kind])
    with caplog.at_level(logging.WARNING, logger="atnb"):
        assert store.load(ALICE) is None

    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"ignoring the stored session for {ALICE}")
    assert "\n" not in lines[0]
    assert "log in again" in lines[0]
    for secret in ("hunter2", ACCESS, REFRESH):
        assert secret not in caplog.text

    store.save(ALICE, entry())  # a new login replaces it
    assert store.load(ALICE)["access_jwt"] == ACCESS


@pytest.mark.parametrize(
    "text",
    ["[]", "{bad", '{"v": 1, "accounts": 3}', '{"v": 9, "accounts": {}}'],
)
def test_corrupt_index_reads_as_empty(store, text: str, caplog) -> None:
    store._write("index", text)
    store.forget_cache()
    with caplog.at_level(logging.WARNING, logger="atnb"):
        assert store.index() == {"v": 1, "current": None, "accounts": {}}
    assert "ignoring the stored session for index" in caplog.text
    store.save(ALICE, entry())
    assert store.index()["current"] == ALICE


@pytest.mark.parametrize(
    ("did", "bad", "message"),
    [
        ("alice.test", entry(), "keyed by a DID"),
        (ALICE, entry(BOB), "does not match"),
        (ALICE, {"did": ALICE, "handle": "a.test"}, "lacks pds_url, access_jwt"),
        (ALICE, entry(pad="x" * MAX_ENTRY_CHARS), "over the 2000"),
    ],
)
def test_save_refuses_bad_entries(store, did: str, bad: dict, message: str) -> None:
    with pytest.raises(StoreError, match=message) as info:
        store.save(did, bad)
    assert ACCESS not in str(info.value)
    assert store.index()["accounts"] == {}


def test_accounts_find_and_forget(store, caplog) -> None:
    store.save(ALICE, entry(last_used=10.0))
    store.save(BOB, entry(BOB, "Bob.Test", last_used=20.0))
    store.set_current(BOB)

    with caplog.at_level(logging.DEBUG, logger="atnb"):
        rows = atnb.accounts(store)
    assert [r["did"] for r in rows] == [BOB, ALICE]
    assert rows[0] == {
        "handle": "Bob.Test",
        "did": BOB,
        "pds_url": "http://127.0.0.1:2583",
        "current": True,
        "last_used": 20.0,
    }
    assert ACCESS not in repr(rows) and REFRESH not in repr(rows)

    find = atnb.store.find_account
    assert find(None, store) == BOB
    assert find("@bob.test", store) == find(" BOB.TEST. ", store) == BOB
    assert find(ALICE, store) == ALICE
    assert find("carol.test", store) is find("did:plc:cccc", store) is None

    heard: list[str] = []
    hook = atnb.store.on_forget(heard.append)
    try:
        atnb.forget("@BOB.test", store)
    finally:
        atnb.store._forget_hooks.remove(hook)
    assert heard == [BOB]
    assert store.load(BOB) is None
    assert store.index()["current"] is None
    atnb.forget(ALICE, store)
    assert atnb.accounts(store) == []
    atnb.forget("carol.test", store)  # nothing stored: nothing to do
    for secret in (ACCESS, REFRESH):
        assert secret not in caplog.text


def test_repr_holds_no_secret(store) -> None:
    store.save(ALICE, entry())
    assert ACCESS not in repr(store) and REFRESH not in repr(store)


# C13: no usable keyring


class _Failing:
    """A keyring backend whose every call raises ``error``."""

    def __init__(self, error: type[Exception]) -> None:
        self.error = error

    def get_password(self, service: str, username: str) -> str:
        raise self.error("no keyring")

    set_password = delete_password = get_password


def _no_keyring_backends() -> list:
    import keyring.backends.fail
    import keyring.backends.null
    import keyring.errors

    errors = keyring.errors
    return [
        keyring.backends.fail.Keyring(),
        keyring.backends.null.Keyring(),
        _Failing(errors.NoKeyringError),
        _Failing(errors.KeyringLocked),
        _Failing(errors.InitError),
        _Failing(ConnectionError),  # e.g. the D-Bus connection dropped
    ]


@pytest.mark.parametrize("which", range(6))
def test_no_keyring_falls_back_to_memory_warning_once(
    which: int, store_dirs: dict, tmp_path: Path, caplog
) -> None:
    backend = _no_keyring_backends()[which]
    before = _files(tmp_path)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level("INFO"):
        warnings.simplefilter("always")
        first, second = KeyringStore(backend), KeyringStore(backend)
        for store in (first, second):
            assert store.load(ALICE) is None
            store.save(ALICE, entry())
            assert store.load(ALICE)["refresh_jwt"] == REFRESH
            store.set_current(ALICE)
            with store.lock(ALICE):
                store.delete(ALICE)

    ours = [w for w in caught if issubclass(w.category, NoKeyringWarning)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    text = str(ours[0].message)
    assert "will not survive a kernel restart" in text
    assert "ATNB_STORE=file" in text and "unlock a keyring" in text
    logged = [r for r in caplog.records if "No usable keyring" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.INFO
    assert first.name == second.name == "memory"
    assert _files(tmp_path) - before <= {p for p in _files(tmp_path) if "lock" in p}
    assert not any(p.endswith(".json") for p in _files(tmp_path))


def test_plaintext_keyring_backend_is_refused(store_dirs: dict) -> None:
    plain = type("PlaintextKeyring", (), {"__module__": "keyrings.alt.file"})()
    with pytest.warns(NoKeyringWarning, match="plain file"):
        assert KeyringStore(plain).index()["accounts"] == {}


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_import_store_is_lazy(store_dirs: dict) -> None:
    done = _run(
        """
        import sys, atnb, atnb.store
        heavy = {"keyring", "filelock", "requests", "pandas"} & set(sys.modules)
        print(sorted(heavy))
        """,
        store_dirs,
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_file_lock_serialises_two_processes(store_dirs: dict, tmp_path: Path) -> None:
    log = tmp_path / "order.log"
    code = f"""
        import sys, time, atnb.store
        store = atnb.store.get_store("file")
        with store.lock({ALICE!r}):
            with open({str(log)!r}, "a") as out:
                out.write(sys.argv[1] + " in\\n"); out.flush()
                time.sleep(0.4)
                out.write(sys.argv[1] + " out\\n")
    """
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), name],
            env={**os.environ, **store_dirs},
        )
        for name in ("A", "B")
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    lines = [line.split() for line in log.read_text().splitlines()]
    assert [step for _, step in lines] == ["in", "out", "in", "out"]
    assert lines[0][0] == lines[1][0] != lines[2][0] == lines[3][0]


def test_index_updates_from_two_processes_are_not_lost(store_dirs: dict) -> None:
    code = """
        import sys, atnb.store
        store = atnb.store.get_store("file")
        for n in range(8):
            did = f"did:plc:{sys.argv[1]}{n}"
            store.save(did, {"did": did, "handle": f"h{n}.test", "pds_url": "x",
                             "access_jwt": "a", "refresh_jwt": "r"})
    """
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), name],
            env={**os.environ, **store_dirs},
        )
        for name in ("a", "b")
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert len(FileStore().index()["accounts"]) == 16


def test_lock_is_reentrant_in_one_thread(store: atnb.store.BaseStore) -> None:
    with store.lock(ALICE), store.lock(ALICE):
        store.save(ALICE, entry())  # takes the index lock inside
    with store.lock(ALICE):
        pass
