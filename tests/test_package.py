"""The public surface, import cost, and tracked files free of secrets."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import atnb

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("requests", "pandas", "keyring", "dns", "pyarrow", "ipywidgets", "IPython")


def test_all_is_what_we_meant():
    assert sorted(atnb.__all__) == sorted(
        [
            "AccountDeactivatedError",
            "AccountTakedownError",
            "ArgumentError",
            "AtnbError",
            "AuthFactorTokenRequired",
            "AuthenticationError",
            "FileStore",
            "InsecureServiceError",
            "InvalidHandleError",
            "InvalidNSIDError",
            "KeyringStore",
            "LoginPendingError",
            "MemoryStore",
            "NetworkError",
            "NotLoggedInError",
            "RateLimitError",
            "ResolutionError",
            "ScopeError",
            "ServerError",
            "Session",
            "SessionExpiredError",
            "SessionStore",
            "StoreError",
            "XRPCError",
            "__version__",
            "accounts",
            "create_account",
            "current_session",
            "facets",
            "forget",
            "frame",
            "iter_frames",
            "load_ipython_extension",
            "login",
            "login_widget",
            "pds_for",
            "resolve_did",
            "resolve_handle",
            "resume",
            "settings",
            "split_uri",
        ]
    )


def test_every_public_name_resolves():
    for name in atnb.__all__:
        assert getattr(atnb, name) is not None, name


def test_import_atnb_loads_nothing_heavy():
    code = (
        f"import sys, atnb; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


def test_tracked_files_hold_no_jwt():
    jwt = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
    listed = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    hits = []
    for name in listed:
        path = ROOT / name
        small = path.is_file() and path.stat().st_size < 2_000_000
        if small and jwt.search(path.read_text(errors="replace")):
            hits.append(name)
    assert hits == []
