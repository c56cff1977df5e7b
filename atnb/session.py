"""The refreshing session: ``@atproto/api``'s AtpAgent contract, in Python.

    session = atnb.login("alice.test", "app-password", service="https://pds")
    session.query("app.bsky.actor.getProfile", actor="alice.test")
    session.procedure("com.atproto.repo.createRecord", {...})
    session.logout()

Public functions: :func:`login`, :func:`create_account`, :func:`resume`,
:func:`current_session` (the last successful login or resume).

Tokens. Data calls go to ``pds_url`` (the ``#atproto_pds`` endpoint of the
``didDoc`` in the session response, else the service logged in to);
``createSession``, ``refreshSession`` and ``deleteSession`` go to the service.
A call refreshes first when the access JWT is within
``settings.refresh_skew`` seconds of its ``exp``, and refreshes and retries
once when it fails with ``ExpiredToken`` (any status) or a 401 other than
``AccountTakedown``/``AccountDeactivated``. ``InvalidToken`` on an
app-password session is :class:`~atnb.errors.ScopeError`, never a refresh.
One refresh runs at a time: threads that waited reuse its result.

Store. The session is saved after login and every refresh, and deleted on
``expired`` and logout; refreshes are serialised across threads and
processes, and an unused session times out (see :mod:`atnb._credentials`).
:func:`login` for an account stored with a valid session resumes it
without sending the password; an entry that cannot be used is skipped with
a warning. :func:`atnb.forget` stops a live session of that account here.

Events, in AtpAgent's order: ``create``, ``create-failed``, ``update``,
``expired``, ``network-error``. ``session.on(event, callback)`` registers
``callback(event, session)`` for one session, ``atnb.session.on(...)`` for
every session (it also sees ``create`` and ``create-failed``). Callbacks
run synchronously, before the next request uses the new tokens.

Replaceable parts (a small protocol each):

- the transport (:class:`atnb.xrpc.Transport`, ``send(request) -> reply``):
  how calls travel, e.g. through another process or with another auth
  header; pass ``transport=`` to :func:`login` or :func:`resume`;
- the session manager (:class:`SessionManager`): what frames, magics and
  widgets call. ``query_with_headers(nsid, params=None, *, headers=None,
  proxy=None, timeout=None) -> (data, response headers)`` is the read that
  lets frames see ``RateLimit-*`` headers.

Nothing secret appears in ``repr``, ``str``, logs or exception text.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from atnb import xrpc
from atnb._credentials import Credentials, _number, _safe
from atnb.errors import (
    InvalidHandleError,
    NetworkError,
    NotLoggedInError,
    ScopeError,
    SessionExpiredError,
    XRPCError,
)

__all__ = [
    "EVENTS",
    "Session",
    "SessionManager",
    "create_account",
    "current_session",
    "login",
    "on",
    "resume",
]

logger = logging.getLogger(__name__)

EVENTS = ("create", "create-failed", "update", "expired", "network-error")
_NO_REFRESH_401 = ("AccountTakedown", "AccountDeactivated", "AuthFactorTokenRequired")
_APP_KINDS = ("app_password", "app_password_privileged")

_current: Session | None = None
_current_guard = threading.Lock()
_listeners: dict[str, list[Callable]] = {event: [] for event in EVENTS}


def on(event: str, callback: Callable[[str, Session], Any]) -> Callable:
    """Call ``callback(event, session)`` on ``event`` of every session.

    Unlike ``session.on``, this also sees ``create`` and ``create-failed``
    of logins still to come. Returns ``callback``.
    """
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}; choose one of {EVENTS}")
    _listeners[event].append(callback)
    return callback


@runtime_checkable
class SessionManager(Protocol):
    """What atnb's upper layers need from a session; implement it for other auth."""

    did: str | None
    handle: str | None
    pds_url: str | None

    def query_with_headers(
        self,
        nsid: str,
        params: Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        proxy: str | None = None,
        timeout: float | None = None,
    ) -> tuple[Any, Mapping[str, str]]: ...

    def procedure(self, nsid: str, data: Any = None, **kwargs: Any) -> Any: ...


class Session(Credentials):
    """A logged-in account: tokens, refresh, events and XRPC calls.

    Build one with :func:`login`, :func:`create_account` or :func:`resume`.
    Attributes: ``did``, ``handle``, ``email``, ``email_confirmed``,
    ``email_auth_factor``, ``active``, ``status``, ``pds_url``, ``service``,
    ``access_expires_at``, ``refresh_expires_at`` (aware UTC datetimes) and
    ``auth_kind`` (``password``, ``app_password`` or
    ``app_password_privileged``, read from the access JWT's ``scope``).
    """

    def __init__(self, service: str, **kwargs: Any) -> None:
        super().__init__(service, **kwargs)
        self._listeners: dict[str, list[Callable]] = {e: [] for e in EVENTS}

    email = property(lambda self: self._info.get("email"))

    email_confirmed = property(lambda self: self._info.get("emailConfirmed"))

    email_auth_factor = property(lambda self: self._info.get("emailAuthFactor"))

    status = property(lambda self: self._info.get("status"))

    @property
    def active(self) -> bool:
        """False only when the server said so; a missing field means active."""
        return self._info.get("active") is not False

    def __repr__(self) -> str:
        if not self.logged_in:
            return "<Session logged out>"
        expiry = self.access_expires_at
        return (
            f"<Session handle={self.handle!r} did={self.did!r} "
            f"pds_url={self.pds_url!r} auth_kind={self.auth_kind!r} "
            f"access_expires_at={expiry.isoformat() if expiry else None!r}>"
        )

    def __str__(self) -> str:
        if not self.logged_in:
            return "logged out"
        kind = (self.auth_kind or "unknown password").replace("_", " ")
        expiry = self.access_expires_at
        until = expiry.strftime("%Y-%m-%d %H:%M UTC") if expiry else "unknown"
        return (
            f"{self.handle} ({self.did}) at {self.pds_url}, {kind}, "
            f"access valid until {until}"
        )

    def on(self, event: str, callback: Callable[[str, Session], Any]) -> Callable:
        """Call ``callback(event, session)`` on ``event``; returns ``callback``."""
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; choose one of {EVENTS}")
        self._listeners[event].append(callback)
        return callback

    def _emit(self, event: str) -> None:
        for callback in [*self._listeners[event], *_listeners[event]]:
            try:
                callback(event, self)
            except Exception as exc:  # a listener must not break the session
                logger.warning("%s listener failed: %s", event, type(exc).__name__)

    def query(
        self,
        nsid: str,
        params: Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        proxy: str | None = None,
        timeout: float | None = None,
        **kw_params: Any,
    ) -> Any:
        """An XRPC query (GET); parameters as a dict or as keywords."""
        merged = {**(params or {}), **kw_params}
        return self.query_with_headers(
            nsid, merged, headers=headers, proxy=proxy, timeout=timeout
        )[0]

    def query_with_headers(
        self,
        nsid: str,
        params: Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        proxy: str | None = None,
        timeout: float | None = None,
        raw_json: bool = False,
    ) -> tuple[Any, Mapping[str, str]]:
        """Like :meth:`query`, returning ``(data, response headers)``.

        With ``raw_json`` a JSON body comes back as its bytes, unparsed.
        """
        return self._send(
            "GET", nsid, params, None, headers, proxy, timeout, raw_json=raw_json
        )

    def procedure(
        self,
        nsid: str,
        data: Any = None,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        proxy: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """An XRPC procedure (POST): JSON for a dict, raw bytes for a blob.

        For bytes, pass the blob's type as ``headers={"Content-Type": ...}``.
        """
        return self._send("POST", nsid, params, data, headers, proxy, timeout)[0]

    def frame(self, nsid: str, params: Any = None, **kwargs: Any) -> Any:
        """A DataFrame of ``nsid``'s results; see :func:`atnb.frames.frame`."""
        from atnb.frames import frame

        return frame(nsid, params, session=self, **kwargs)

    def _send(
        self, method, nsid, params, data, headers, proxy, timeout, raw_json=False
    ):
        xrpc.check_nsid(nsid)
        body, extra = xrpc.encode_body(data, headers)
        if hasattr(body, "read"):
            body = body.read()  # a retry must be able to send it again
        if proxy:
            extra["atproto-proxy"] = proxy
        pairs = xrpc.encode_params(params)

        self._check_usable()
        try:
            return self._send_checked(
                method, nsid, pairs, body, extra, timeout, raw_json
            )
        except NetworkError as exc:
            if type(exc) is NetworkError:
                exc.hint = NetworkError.kept_hint
            raise

    def _send_checked(self, method, nsid, pairs, body, extra, timeout, raw_json):
        self._refresh_if_due()
        used = self._access_jwt
        try:
            result = self._call(
                method, nsid, pairs, body, extra, timeout, used, raw_json
            )
        except XRPCError as exc:
            if not self._should_refresh(exc):
                self._raise_scoped(exc)
            self._refresh_now(used)
            try:
                result = self._call(
                    method,
                    nsid,
                    pairs,
                    body,
                    extra,
                    timeout,
                    self._access_jwt,
                    raw_json,
                )
            except XRPCError as again:
                self._raise_scoped(again)
        self._touch()
        return result

    def _call(
        self, method, nsid, pairs, body, headers, timeout, access_jwt, raw_json=False
    ):
        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        headers["Authorization"] = f"Bearer {access_jwt}"
        request = xrpc.Request(
            method, self.pds_url or self.service, nsid, pairs, body, headers, timeout
        )
        return xrpc.call(request, self._transport, raw_json=raw_json)

    def _should_refresh(self, exc: XRPCError) -> bool:
        if exc.error == "InvalidToken" and self.auth_kind in _APP_KINDS:
            return False
        if exc.error == "ExpiredToken":
            return True
        return exc.status == 401 and exc.error not in _NO_REFRESH_401

    def _raise_scoped(self, exc: XRPCError) -> None:
        """Re-raise; C11: an app password refused with ``InvalidToken`` is a
        scope problem, whatever the message says."""
        if exc.error != "InvalidToken" or self.auth_kind not in _APP_KINDS:
            raise exc
        raise ScopeError(
            exc.server_message,
            status=exc.status,
            error=exc.error,
            nsid=exc.nsid,
            headers=exc.headers,
        ) from exc

    def _on_cleared(self) -> None:
        global _current
        with _current_guard:
            if _current is self:
                _current = None


# -- module functions -------------------------------------------------------------


def _set_current(session: Session) -> Session:
    global _current
    with _current_guard:
        _current = session
    return session


def current_session() -> Session | None:
    """The session of the last successful login or resume, or None."""
    return _current


def _get_store(store: Any) -> Any:
    from atnb.store import get_store

    return get_store(store)


def _resume_stored(identifier: str, service: str | None, **kwargs: Any):
    """A stored, still valid session for ``identifier``, or None."""
    from atnb.store import find_account

    store = kwargs["store"]
    did = _find_stored(identifier, store, find_account)
    entry = _safe(store.load, did) if did else None
    if not entry:
        return None
    if service is not None and xrpc.check_service_url(
        service, allow_loopback_http=True
    ) not in (entry.get("service"), entry.get("pds_url")):
        return None

    try:
        session = Session._from_stored(entry, **kwargs)
    except NotLoggedInError as exc:
        logger.warning("%s; sending the password instead", exc.message)
        return None
    refresh_exp = _number(session._refresh.get("exp"))
    if refresh_exp and refresh_exp <= session._clock():
        return None
    try:
        session._check_usable()  # an inactive one is revoked and cleared here
        session._refresh_if_due()
    except SessionExpiredError:
        return None
    logger.info("%s has a valid stored session; resumed it", session.handle)
    return session


def _find_stored(identifier: str, store: Any, find_account: Callable) -> str | None:
    if "@" not in identifier:
        return find_account(identifier, store)
    for did in store.index().get("accounts", {}):
        entry = _safe(store.load, did) or {}
        if str(entry.get("email") or "").lower() == identifier.lower():
            return did
    return None


def _identifier(identifier: Any, password: Any) -> str:
    """The normalised identifier; its error never repeats what was typed.

    Arguments given the wrong way round would put the password there.
    """
    from atnb.identity import is_did, is_valid_handle, normalize_identifier

    try:
        return normalize_identifier(identifier, echo=False)
    except InvalidHandleError as exc:
        error = exc
    other = password.strip() if isinstance(password, str) else ""
    if not (is_did(other) or is_valid_handle(other.removeprefix("@"))):
        raise error
    raise InvalidHandleError(
        error.message,
        hint="The arguments look swapped: pass the handle first, then the password.",
    )


def login(
    identifier: str,
    password: str,
    *,
    auth_factor_token: str | None = None,
    service: str | None = None,
    store: Any = None,
    transport: xrpc.Transport | None = None,
    clock: Callable[[], float] | None = None,
) -> Session:
    """Log in with a handle, DID or email and a password (``createSession``).

    An account already stored with a valid session is resumed without
    sending the password (log out first to switch password). With no
    ``service`` the account's PDS is discovered (email: the entryway).
    The new session replaces :func:`current_session` only on success.

    Raises:
        InvalidHandleError: the identifier is malformed (nothing was sent).
        AuthFactorTokenRequired: check your email and pass ``auth_factor_token``.
        AuthenticationError: wrong identifier or password.
    """
    from atnb.identity import pds_for

    identifier = _identifier(identifier, password)
    kwargs = {"store": _get_store(store), "transport": transport, "clock": clock}
    resumed = _resume_stored(identifier, service, **kwargs)
    if resumed is not None:
        _safe(resumed.store.set_current, resumed.did)
        return _set_current(resumed)

    if service is None:
        service = pds_for(identifier)
    session = Session(service, **kwargs)
    payload = {"identifier": identifier, "password": password}
    if auth_factor_token:
        payload["authFactorToken"] = auth_factor_token.strip()
    session._create("com.atproto.server.createSession", payload)
    return _set_current(session)


def create_account(
    handle: str,
    email: str,
    password: str,
    *,
    service: str,
    invite_code: str | None = None,
    store: Any = None,
    transport: xrpc.Transport | None = None,
    clock: Callable[[], float] | None = None,
) -> Session:
    """Create an account (``createAccount``) and return its session."""
    from atnb.identity import normalize_handle

    handle = normalize_handle(handle, echo=False)
    kwargs = {"store": _get_store(store), "transport": transport, "clock": clock}
    session = Session(service, **kwargs)
    payload = {"handle": handle, "email": email, "password": password}
    if invite_code:
        payload["inviteCode"] = invite_code
    session._create("com.atproto.server.createAccount", payload)
    return _set_current(session)


def resume(
    account: str | None = None,
    *,
    store: Any = None,
    transport: xrpc.Transport | None = None,
    clock: Callable[[], float] | None = None,
) -> Session:
    """The stored session of ``account`` (handle or DID; None: the current one).

    Sends nothing while the stored access JWT is valid.

    Raises:
        NotLoggedInError: nothing is stored for that account.
        SessionExpiredError: the stored session was unused for longer than
            ``settings.inactivity_timeout``; it is revoked and cleared.
    """
    from atnb.store import find_account

    store_obj = _get_store(store)
    did = find_account(account, store_obj)
    entry = _safe(store_obj.load, did) if did else None
    if not entry:
        who = account or "the current account"
        raise NotLoggedInError(f"No stored session for {who}")

    session = Session._from_stored(
        entry, store=store_obj, transport=transport, clock=clock
    )
    session._check_usable()  # the inactivity timeout applies to resume too
    _safe(store_obj.set_current, did)
    logger.info("session resumed for %s", session.handle)
    return _set_current(session)
