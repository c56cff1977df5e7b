"""atnb: the AT Protocol (Bluesky) in Jupyter and IPython.

In a notebook::

    %load_ext atnb
    %atlogin
    %xrpc app.bsky.feed.getAuthorFeed actor=alice.test --all

From Python::

    import atnb
    session = atnb.login("alice.test", "app-password")
    df = atnb.frame("app.bsky.feed.getAuthorFeed", actor="alice.test", all_pages=True)

Importing atnb is cheap: requests, pandas, ipywidgets and IPython load the
first time a name that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from atnb.config import settings
from atnb.errors import (
    AccountDeactivatedError,
    AccountTakedownError,
    ArgumentError,
    AtnbError,
    AuthenticationError,
    AuthFactorTokenRequired,
    InsecureServiceError,
    InvalidHandleError,
    InvalidNSIDError,
    LoginPendingError,
    NetworkError,
    NotLoggedInError,
    RateLimitError,
    ResolutionError,
    ScopeError,
    ServerError,
    SessionExpiredError,
    StoreError,
    XRPCError,
)

__version__ = "0.1.0"

# name -> module that defines it; loaded on first attribute access.
_LAZY = {
    "Session": "atnb.session",
    "login": "atnb.session",
    "create_account": "atnb.session",
    "resume": "atnb.session",
    "current_session": "atnb.session",
    "SessionStore": "atnb.store",
    "KeyringStore": "atnb.store",
    "FileStore": "atnb.store",
    "MemoryStore": "atnb.store",
    "accounts": "atnb.store",
    "forget": "atnb.store",
    "resolve_handle": "atnb.identity",
    "resolve_did": "atnb.identity",
    "pds_for": "atnb.identity",
    "frame": "atnb.frames",
    "iter_frames": "atnb.frames",
    "split_uri": "atnb.bsky",
    "facets": "atnb.bsky",
    "login_widget": "atnb.widgets",
}

__all__ = [
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

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from atnb.bsky import facets, split_uri
    from atnb.frames import frame, iter_frames
    from atnb.identity import pds_for, resolve_did, resolve_handle
    from atnb.session import Session, create_account, current_session, login, resume
    from atnb.store import (
        FileStore,
        KeyringStore,
        MemoryStore,
        SessionStore,
        accounts,
        forget,
    )
    from atnb.widgets import login_widget


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'atnb' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def load_ipython_extension(ipython: Any) -> None:
    """Register atnb's magics: ``%load_ext atnb``."""
    from atnb.magics import register

    register(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Remove atnb's magics and its one-line error display: ``%unload_ext atnb``."""
    from atnb.magics import unregister

    unregister(ipython)
