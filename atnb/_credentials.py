"""Credentials: the tokens of a session, their refresh and their storage.

What a session *is* lives here; how it rides on XRPC calls is
:mod:`atnb.session`. :class:`Credentials` holds the access and refresh
JWTs with their claims, the account fields of the last session response,
the service and ``pds_url``, and keeps them in the store:

- after login and after every refresh the entry is saved before the next
  request uses the new tokens;
- a refresh holds a thread lock, then ``store.lock(did)`` (cross-process),
  re-reads the entry and adopts tokens another kernel already refreshed;
  threads that waited for it find their token replaced and do nothing;
- a refresh that fails for a network reason (connection, timeout, 5xx,
  429) keeps everything and fires ``network-error``; an auth rejection
  (``ExpiredToken``, ``InvalidToken``, ``AccountTakedown``, a 401) clears
  memory and store and fires ``expired``;
- ``last_used`` is written at most every :data:`LAST_USED_EVERY` seconds; a
  session unused by any kernel for ``settings.inactivity_timeout`` seconds
  is revoked and cleared at its next use.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from atnb import _jwt, xrpc
from atnb.config import settings
from atnb.errors import (
    AccountTakedownError,
    AtnbError,
    NetworkError,
    NotLoggedInError,
    RateLimitError,
    SessionExpiredError,
    StoreError,
    XRPCError,
)

__all__ = ["LAST_USED_EVERY", "Credentials"]

logger = logging.getLogger("atnb.session")

LAST_USED_EVERY = 60.0
"""Seconds between two writes of ``last_used`` to the store."""

_REJECTED = ("ExpiredToken", "InvalidToken", "AccountTakedown", "AccountDeactivated")


class _NoStore:
    """Persistence switched off (``Session(store=None)``)."""

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

    def lock(self, did: str) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


class Credentials:
    """Tokens, account fields, refresh and persistence of one session."""

    def __init__(
        self,
        service: str,
        *,
        store: Any = None,
        transport: xrpc.Transport | None = None,
        clock: Callable[[], float] | None = None,
        allow_loopback_http: bool = True,
    ) -> None:
        self.service = xrpc.check_service_url(
            service, allow_loopback_http=allow_loopback_http
        )
        self.pds_url: str | None = None
        self.store = store if store is not None else _NoStore()
        self._transport = transport or xrpc.HTTPTransport()
        self._clock = clock or time.time
        self._lock = threading.RLock()
        self._info: dict[str, Any] = {}
        self._access_jwt: str | None = None
        self._refresh_jwt: str | None = None
        self._access: dict[str, Any] = {}
        self._refresh: dict[str, Any] = {}
        self._last_used = 0.0
        self._last_saved_use = 0.0

    did = property(lambda self: self._info.get("did"))

    handle = property(lambda self: self._info.get("handle"))

    @property
    def logged_in(self) -> bool:
        return self._refresh_jwt is not None

    @property
    def auth_kind(self) -> str | None:
        return _jwt.auth_kind(self._access)

    @property
    def access_expires_at(self) -> _dt.datetime | None:
        return _jwt.expires_at(self._access)

    @property
    def refresh_expires_at(self) -> _dt.datetime | None:
        return _jwt.expires_at(self._refresh)

    def _auth_call(self, nsid: str, jwt: str | None = None, data: Any = None):
        body, headers = xrpc.encode_body(data)
        if jwt is not None:
            headers["Authorization"] = f"Bearer {jwt}"
        request = xrpc.Request("POST", self.service, nsid, [], body, headers)
        return xrpc.call(request, self._transport)[0]

    def _adopt(self, data: Any) -> None:
        """Take tokens and account fields from a session response."""
        if not isinstance(data, dict) or not all(
            isinstance(data.get(k), str) for k in ("accessJwt", "refreshJwt", "did")
        ):
            raise XRPCError(
                "the session response lacks accessJwt, refreshJwt or did",
                hint="The service may not be an AT Protocol PDS; check the URL.",
            )
        known = ("did", "handle", "email", "emailConfirmed", "emailAuthFactor")
        info = {k: data[k] for k in (*known, "active", "status") if k in data}
        if self._info.get("did") == data["did"]:
            info = {**self._info, **info}
        info["status"] = data.get("status")  # absent: active, no status
        self._info = info
        self._set_tokens(data["accessJwt"], data["refreshJwt"])
        self.pds_url = (
            self._pds_from(data.get("didDoc")) or self.pds_url or self.service
        )

    def _pds_from(self, did_doc: Any) -> str | None:
        if not isinstance(did_doc, dict):
            return None
        from atnb.identity import pds_endpoint

        endpoint = pds_endpoint(did_doc)
        if endpoint is None:
            return None
        loopback = xrpc.is_loopback(_host(self.service))
        try:
            return xrpc.check_service_url(endpoint, allow_loopback_http=loopback)
        except AtnbError:
            logger.warning(
                "Ignoring the PDS URL %s from %s's DID document: not HTTPS",
                endpoint,
                self.handle,
            )
            return None

    def _set_tokens(self, access_jwt: str | None, refresh_jwt: str | None) -> None:
        self._access_jwt, self._refresh_jwt = access_jwt, refresh_jwt
        self._access = _claims(access_jwt)
        self._refresh = _claims(refresh_jwt)

    def refresh(self) -> None:
        """Refresh the tokens now (``refreshSession``)."""
        self._check_usable()
        self._refresh_now(self._access_jwt)

    def _refresh_if_due(self) -> None:
        exp = self._access.get("exp")
        if not isinstance(exp, (int, float)):
            return
        now = self._clock()
        if exp - settings.refresh_skew > now:
            return
        try:
            self._refresh_now(self._access_jwt)
        except (NetworkError, RateLimitError):
            if exp <= now:
                raise
            logger.info(
                "early refresh for %s failed; the token is still valid", self.did
            )

    def _refresh_now(self, used: str | None) -> None:
        """Refresh unless another thread already replaced ``used``."""
        with self._lock:
            if self._access_jwt != used:
                if self._refresh_jwt is None:
                    raise SessionExpiredError("The session was closed meanwhile")
                return
            self._check_usable()
            did = self.did
            with self.store.lock(did):
                if self._adopt_stored():
                    return
                try:
                    data = self._auth_call(
                        "com.atproto.server.refreshSession", self._refresh_jwt
                    )
                    self._adopt(data)
                except (NetworkError, RateLimitError):
                    self._emit("network-error")
                    raise
                except XRPCError as exc:
                    if exc.status != 401 and exc.error not in _REJECTED:
                        raise
                    self._clear()
                    if isinstance(exc, AccountTakedownError):
                        raise
                    raise SessionExpiredError(
                        f"The server refused to refresh the session of {did} "
                        f"({exc.error or exc.status})"
                    ) from exc
                self._persist()
            logger.info("session refreshed for %s", self.handle)
            self._emit("update")

    def _adopt_stored(self) -> bool:
        """Take newer tokens another kernel stored; True when they are usable."""
        entry = _safe(self.store.load, self.did)
        if not entry or entry.get("refresh_jwt") in (None, self._refresh_jwt):
            return False
        self._set_tokens(entry["access_jwt"], entry["refresh_jwt"])
        exp = self._access.get("exp")
        if (
            isinstance(exp, (int, float))
            and exp - settings.refresh_skew > self._clock()
        ):
            logger.info("using tokens refreshed by another process for %s", self.did)
            self._emit("update")
            return True
        return False

    def _clear(self) -> None:
        """Forget the tokens, delete the stored entry, fire ``expired``."""
        did = self.did
        self._set_tokens(None, None)
        _safe(self.store.delete, did)
        self._on_cleared()
        logger.info("session cleared for %s", did)
        self._emit("expired")

    def _on_cleared(self) -> None:
        """Called when the tokens are dropped (the session forgets "current")."""

    def _emit(self, event: str) -> None:
        """Tell listeners about ``event`` (the session keeps them)."""

    def _check_usable(self) -> None:
        if self._refresh_jwt is None:
            raise NotLoggedInError("This session is logged out")
        timeout = settings.inactivity_timeout
        now = self._clock()
        if not timeout or timeout <= 0 or now - self._last_used <= timeout:
            return

        entry = _safe(self.store.load, self.did) or {}
        last = max(self._last_used, _number(entry.get("last_used")))
        if now - last <= timeout:
            self._last_used = last
            return
        with self._lock:
            refresh_jwt, handle = self._refresh_jwt, self.handle
            self._clear()
        with contextlib.suppress(AtnbError):
            self._auth_call("com.atproto.server.deleteSession", refresh_jwt)
        raise SessionExpiredError(
            f"The session of {handle} was unused for more than "
            f"{_duration(timeout)} and was closed"
        )

    def _touch(self) -> None:
        now = self._clock()
        self._last_used = max(self._last_used, now)
        if now - self._last_saved_use < LAST_USED_EVERY:
            return
        with self._lock, self.store.lock(self.did):
            self._last_saved_use = now
            entry = _safe(self.store.load, self.did)
            if entry:
                entry["last_used"] = now
                _safe(self.store.save, self.did, entry)

    def _entry(self) -> dict:
        return {
            "v": 1,
            "did": self.did,
            "handle": self.handle,
            "pds_url": self.pds_url,
            "service": self.service,
            "email": self.email,
            "access_jwt": self._access_jwt,
            "refresh_jwt": self._refresh_jwt,
            "access_exp": self._access.get("exp"),
            "refresh_exp": self._refresh.get("exp"),
            "last_used": self._last_used,
        }

    def _persist(self, *, current: bool = False) -> None:
        self._last_saved_use = self._last_used
        _safe(self.store.save, self.did, self._entry())
        if current:
            _safe(self.store.set_current, self.did)

    @classmethod
    def _from_entry(cls, entry: dict, **kwargs: Any) -> Any:
        """A logged-in instance from a store entry (no request is sent)."""
        session = cls(entry.get("service") or entry["pds_url"], **kwargs)
        session._info = {"did": entry["did"], "handle": entry.get("handle")}
        if entry.get("email"):
            session._info["email"] = entry["email"]
        session._set_tokens(entry["access_jwt"], entry["refresh_jwt"])
        loopback = xrpc.is_loopback(_host(session.service))
        session.pds_url = xrpc.check_service_url(
            entry["pds_url"], allow_loopback_http=loopback
        )
        session._last_used = _number(entry.get("last_used")) or session._clock()
        session._last_saved_use = session._last_used
        return session


# -- helpers ----------------------------------------------------------------------


def _safe(method: Callable, *args: Any) -> Any:
    """Call a store method; a store failure is a warning, not a lost call."""
    try:
        return method(*args)
    except StoreError as exc:
        logger.warning("session store: %s", exc)
        return None


def _claims(jwt: str | None) -> dict[str, Any]:
    try:
        return _jwt.decode_claims(jwt) if jwt else {}
    except ValueError:
        return {}


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0


def _host(url: str) -> str:
    import urllib.parse

    return urllib.parse.urlsplit(url).hostname or ""


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:g} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:g} hours"
    return f"{seconds:g} seconds"
