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
  is revoked and cleared at its next use;
- :func:`atnb.forget` stops this process's live sessions of the account,
  so none saves it again;
- a store that fails (keyring gone, disk full, no lock folder) costs a
  WARNING, never a session or a call's result.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from atnb import _jwt, xrpc
from atnb import store as _store
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

_live: weakref.WeakSet = weakref.WeakSet()  # every session of this process
_live_guard = threading.Lock()


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
        self.store = store if store is not None else _store.NullStore()
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
        with _live_guard:
            _live.add(self)

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

    def _create(self, nsid: str, payload: dict) -> None:
        """``createSession`` or ``createAccount``; events and store follow."""
        try:
            data = self._auth_call(nsid, data=payload)
            self._adopt(data)
        except AtnbError:
            self._emit("create-failed")
            raise

        self._last_used = self._clock()
        self._persist(current=True)
        logger.info("session created for %s", self.handle)
        if self.auth_kind == "password":
            logger.warning(
                "Logged in to %s with the main password; in notebooks an app "
                "password is safer (create one in the account's settings).",
                self.handle,
            )
        if self._info.get("active") is False:
            logger.warning(
                "The account %s is deactivated (status: %s); most calls will "
                "fail until it is reactivated.",
                self.handle,
                self._info.get("status"),
            )
        self._emit("create")

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
        # Claims before tokens: a reader takes the token first, then its claims.
        self._access = _claims(access_jwt)
        self._refresh = _claims(refresh_jwt)
        self._access_jwt, self._refresh_jwt = access_jwt, refresh_jwt

    def _due(self) -> bool:
        """True when the access JWT is within the skew of ``exp`` (or has none)."""
        exp = self._access.get("exp")
        if not isinstance(exp, (int, float)):
            return True
        return exp - settings.refresh_skew <= self._clock()

    def refresh(self) -> None:
        """Refresh the tokens now (``refreshSession``)."""
        self._check_usable()
        self._refresh_now(self._access_jwt)

    def _refresh_if_due(self) -> None:
        used = self._access_jwt  # first: a refresh may land between the reads
        exp = self._access.get("exp")
        if not isinstance(exp, (int, float)):
            return
        now = self._clock()
        if exp - settings.refresh_skew > now:
            return
        try:
            self._refresh_now(used)
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
                if self._take_stored() and not self._due():
                    logger.info("using tokens refreshed by another process for %s", did)
                    self._emit("update")
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

    def _take_stored(self) -> bool:
        """Take the tokens another kernel stored, if they differ from ours."""
        entry = _safe(self.store.load, self.did)
        if not entry or entry.get("refresh_jwt") in (None, self._refresh_jwt):
            return False
        self._set_tokens(entry["access_jwt"], entry["refresh_jwt"])
        return True

    def _clear(self) -> None:
        """Forget the tokens, delete the stored entry, fire ``expired``.

        An entry holding another refresh JWT than ours is kept: a newer
        login (another kernel's) wrote it.
        """
        did, dropped = self.did, self._refresh_jwt
        self._set_tokens(None, None)
        stored = _safe(self.store.load, did)
        if stored is None or stored.get("refresh_jwt") == dropped:
            _safe(self.store.delete, did)
        else:
            logger.info("kept the stored session of %s: a newer login wrote it", did)
        self._on_cleared()
        logger.info("session cleared for %s", did)
        self._emit("expired")

    def logout(self) -> bool:
        """Revoke the session on the server and clear it here.

        Local state (memory and store) is cleared first, even when the
        server cannot be reached. The newest refresh JWT is revoked, also
        when another kernel rotated it (ours too, when it differs). Returns
        True when the server confirmed the revoke, False (with a warning)
        when it did not.
        """
        with self._lock, _try_lock(self.store, self.did):
            own = self._refresh_jwt
            if own is None:
                return False
            self._take_stored()
            newest, handle = self._refresh_jwt, self.handle
            self._clear()

        delete = "com.atproto.server.deleteSession"
        if own != newest:  # a separate login of ours, or spent: best effort
            with contextlib.suppress(AtnbError):
                self._auth_call(delete, own)
        try:
            self._auth_call(delete, newest)
        except AtnbError as exc:
            logger.warning(
                "Logged out %s here, but the server-side revoke was not "
                "confirmed (%s); the session may stay valid on the server "
                "until it expires.",
                handle,
                type(exc).__name__,
            )
            return False
        logger.info("logged out %s; the server revoked the session", handle)
        return True

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
            if refresh_jwt is None:  # another thread closed it meanwhile
                raise NotLoggedInError("This session is logged out")
            self._clear()
        with contextlib.suppress(AtnbError):
            self._auth_call("com.atproto.server.deleteSession", refresh_jwt)
        raise SessionExpiredError(
            f"The session of {handle} was unused for more than "
            f"{_duration(timeout)} and was closed"
        )

    def _touch(self) -> None:
        """Record a use; a store that fails here never costs the call's result."""
        now = self._clock()
        self._last_used = max(self._last_used, now)
        if now - self._last_saved_use < LAST_USED_EVERY:
            return
        self._last_saved_use = now
        try:
            with self._lock, self.store.lock(self.did):
                entry = _safe(self.store.load, self.did)
                if entry:
                    entry["last_used"] = now
                    _safe(self.store.save, self.did, entry)
        except (StoreError, OSError) as exc:
            logger.warning("could not record the use of %s: %s", self.did, exc)

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
    def _from_stored(cls, entry: dict, **kwargs: Any) -> Any:
        """Like :meth:`_from_entry`; a one-line NotLoggedInError if unusable."""
        try:
            return cls._from_entry(entry, **kwargs)
        except (AtnbError, KeyError, TypeError, ValueError) as exc:
            reason = getattr(exc, "message", "") or type(exc).__name__
        who = entry.get("handle") or entry.get("did")
        raise NotLoggedInError(
            f"The stored session for {who} cannot be used ({reason})",
            hint="Log in again with %atlogin or atnb.login() to replace it.",
        )

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
    except (StoreError, OSError) as exc:  # OSError: a full disk, a locked folder
        logger.warning("session store: %s; the session goes on in this kernel", exc)
        return None


def _try_lock(store: Any, did: str | None) -> contextlib.ExitStack:
    """Hold ``store.lock(did)`` when it can be had; a warning when not."""
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(store.lock(did))
    except (StoreError, OSError) as exc:
        logger.warning("session store lock: %s", exc)
    return stack


@_store.on_forget
def _forgotten(did: str) -> None:
    """``atnb.forget`` removed ``did``: stop this process's live sessions of it."""
    with _live_guard:
        sessions = [s for s in _live if s.did == did and s.logged_in]
    for session in sessions:
        with session._lock:
            if session.logged_in:
                logger.info("stopping the live session of %s: it was forgotten", did)
                session._clear()


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
