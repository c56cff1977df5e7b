"""Every error atnb raises, in one tree.

    AtnbError                     base class; message ends with the next step
    ├── ArgumentError             arguments that cannot work (max_pages=0, field=)
    ├── InvalidHandleError        a handle or identifier fails the syntax check
    ├── InvalidNSIDError          an NSID fails the syntax check
    ├── InsecureServiceError      an http:// URL that is not a chosen loopback host
    ├── ResolutionError           handle → DID → PDS discovery failed
    ├── NotLoggedInError          no session, or none stored for that account
    ├── LoginPendingError         a login form is waiting for the user
    ├── SessionExpiredError       the server rejected the refresh; log in again
    ├── StoreError                a session store could not be read or written
    ├── NetworkError              connection refused or dropped, timeout
    └── XRPCError                 the server answered with an XRPC error
        ├── AuthenticationError   wrong identifier or password
        ├── AuthFactorTokenRequired  the server wants an emailed sign-in code
        ├── AccountTakedownError  the account was taken down
        ├── AccountDeactivatedError
        ├── ScopeError            an app password may not use that route (C11)
        ├── RateLimitError        429, with limit, remaining, reset_at, window
        └── ServerError           5xx or a non-JSON body (also a NetworkError)

No message here ever holds a password, sign-in code or JWT: messages are
built from the server's error name and text, the NSID and the status only.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any

__all__ = [
    "AccountDeactivatedError",
    "AccountTakedownError",
    "ArgumentError",
    "AtnbError",
    "AuthFactorTokenRequired",
    "AuthenticationError",
    "InsecureServiceError",
    "InvalidHandleError",
    "InvalidNSIDError",
    "LoginPendingError",
    "NetworkError",
    "NotLoggedInError",
    "RateLimitError",
    "ResolutionError",
    "ScopeError",
    "ServerError",
    "SessionExpiredError",
    "StoreError",
    "XRPCError",
    "error_from_response",
]


class AtnbError(Exception):
    """Base class of atnb's errors.

    ``hint`` is the next step for the user; it is appended to the message
    unless the message already carries one. A pull that fails part-way sets
    ``frame`` (the rows fetched so far) and ``cursor`` (where to resume).
    """

    hint = ""
    frame: Any = None
    cursor: str | None = None

    def __init__(self, message: str = "", *, hint: str | None = None) -> None:
        if hint is not None:
            self.hint = hint
        self.message = message
        super().__init__(self._compose())

    def _compose(self) -> str:
        text = self.message.rstrip()
        if self.hint and self.hint not in text:
            text = f"{text.rstrip('.')}. {self.hint}" if text else self.hint
        return text

    def __str__(self) -> str:
        return self._compose()


class ArgumentError(AtnbError, ValueError):
    """Arguments that cannot work together (a limit below 1, an unknown field)."""


class InvalidHandleError(AtnbError, ValueError):
    """A handle (or login identifier) is not valid AT Protocol syntax."""

    hint = "Check the spelling: a handle looks like alice.bsky.social."


class InvalidNSIDError(AtnbError, ValueError):
    """An NSID such as ``app.bsky.feed.getAuthorFeed`` is malformed."""

    hint = "An NSID looks like app.bsky.feed.getAuthorFeed."


class InsecureServiceError(AtnbError, ValueError):
    """A service URL is not HTTPS and not an explicitly chosen loopback host."""

    hint = "Use an https:// URL (http:// is allowed only for localhost)."


class ResolutionError(AtnbError):
    """Handle, DID or PDS discovery failed."""

    hint = "Check the handle, or pass service= with the PDS URL."


class NotLoggedInError(AtnbError):
    """No session is open, or none is stored for the account asked for."""

    hint = "Log in with %atlogin or atnb.login()."


class LoginPendingError(AtnbError):
    """A login form is shown and still waiting for the user."""

    hint = "Finish the login form above, then run this again."


class SessionExpiredError(AtnbError):
    """The server rejected the refresh token; the session is gone."""

    hint = "Log in again with %atlogin or atnb.login()."


class StoreError(AtnbError):
    """A session store could not be read or written."""

    hint = "Choose another store with store='memory' or ATNB_STORE=memory."


class NetworkError(AtnbError, ConnectionError):
    """The server could not be reached, or the connection dropped."""

    hint = "Check the connection, then run this again."
    #: The hint a logged-in session's calls give: nothing was lost.
    kept_hint = "Check the connection and run this again; the session was kept."


class XRPCError(AtnbError):
    """The server answered an XRPC call with an error.

    Attributes:
        status: the HTTP status code.
        error: the error name from the body (``ExpiredToken``), or None.
        nsid: the method called.
        headers: the response headers (a case-insensitive mapping).
    """

    hint = "Check the method's parameters against its lexicon, then try again."

    def __init__(
        self,
        message: str = "",
        *,
        status: int | None = None,
        error: str | None = None,
        nsid: str | None = None,
        headers: Mapping[str, str] | None = None,
        hint: str | None = None,
    ) -> None:
        self.status = status
        self.error = error
        self.nsid = nsid
        self.headers = dict(headers or {})
        self.server_message = message
        where = f"{nsid}: " if nsid else ""
        name = f"{error} " if error else ""
        code = f"(HTTP {status})" if status is not None else ""
        head = f"{where}{name}{code}".strip()
        one_line = " ".join(message.split())  # a server's text may hold breaks
        text = f"{head}: {one_line}" if one_line else head
        super().__init__(text, hint=hint)


class AuthenticationError(XRPCError):
    """Wrong identifier or password (``AuthenticationRequired``)."""

    hint = "Check the identifier and password; an app password is recommended."


class AuthFactorTokenRequired(XRPCError):
    """The server sent a sign-in code by email and wants it back."""

    hint = "Check your email for the sign-in code and pass auth_factor_token=."


class AccountTakedownError(XRPCError):
    """The account was taken down by its service."""

    hint = "Contact the account's service provider; the stored session was removed."


class AccountDeactivatedError(XRPCError):
    """The account is deactivated."""

    hint = "Reactivate the account, then log in again."


class ScopeError(XRPCError):
    """An app-password session called a route that needs more rights (C11)."""

    hint = (
        "This needs a privileged app password or the main password: "
        "log in again with one."
    )


class ServerError(XRPCError, NetworkError):
    """The server failed (5xx) or answered with something that is not XRPC JSON."""

    hint = "The service had a problem; try again later (your session was kept)."


class RateLimitError(XRPCError):
    """Too many requests (HTTP 429, ``RateLimitExceeded``).

    Attributes:
        limit: requests allowed in the window, or None.
        remaining: requests left, or None.
        reset_at: when the window resets (aware UTC datetime), or None.
        window: the window length in seconds, or None.
    """

    def __init__(self, message: str = "", **kwargs: Any) -> None:
        headers = {k.lower(): v for k, v in (kwargs.get("headers") or {}).items()}
        self.limit = _int(headers.get("ratelimit-limit"))
        self.remaining = _int(headers.get("ratelimit-remaining"))
        reset = _int(headers.get("ratelimit-reset"))
        self.reset_at = (
            _dt.datetime.fromtimestamp(reset, tz=_dt.timezone.utc)
            if reset is not None
            else None
        )
        self.window = _policy_window(headers.get("ratelimit-policy"))
        if self.reset_at is not None:
            stamp = self.reset_at.strftime("%Y-%m-%d %H:%M:%S UTC")
            kwargs.setdefault("hint", f"Wait until {stamp}, then try again.")
        else:
            kwargs.setdefault("hint", "Wait a while, then try again.")
        super().__init__(message, **kwargs)


def _int(value: str | None) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _policy_window(policy: str | None) -> int | None:
    """Read the window from a ``RateLimit-Policy`` header such as ``100;w=86400``."""
    if not policy:
        return None
    for part in policy.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key == "w":
            return _int(value)
    return None


_BY_NAME: dict[str, type[XRPCError]] = {
    "AuthenticationRequired": AuthenticationError,
    "AuthFactorTokenRequired": AuthFactorTokenRequired,
    "AccountTakedown": AccountTakedownError,
    "AccountDeactivated": AccountDeactivatedError,
    "RateLimitExceeded": RateLimitError,
}


def error_from_response(
    status: int,
    body: Any,
    *,
    nsid: str | None = None,
    headers: Mapping[str, str] | None = None,
    content_type: str = "",
) -> XRPCError:
    """Build the right error for a failed XRPC response.

    ``body`` is the parsed JSON body, or raw text/bytes when it was not JSON.
    Matching is on the error name, never on message text.
    """
    error = message = None
    if isinstance(body, dict):
        error = body.get("error") if isinstance(body.get("error"), str) else None
        raw = body.get("message")
        message = raw if isinstance(raw, str) else None

    if error is None and (status >= 500 or not isinstance(body, dict)):
        kind = "an HTML page" if "html" in content_type.lower() else "a non-JSON body"
        text = message or f"the server answered HTTP {status} with {kind}"
        if status == 429:
            cls: type[XRPCError] = RateLimitError
        elif status >= 500 or status == 0:
            cls = ServerError
        else:
            cls = XRPCError
        return cls(text, status=status, error=error, nsid=nsid, headers=headers)

    if error == "MethodNotImplemented":
        # A 501 from a typo in the NSID is not an outage: no "try again later".
        return XRPCError(
            message or "",
            status=status,
            error=error,
            nsid=nsid,
            headers=headers,
            hint="Check the NSID's spelling; this service does not offer it.",
        )
    cls = _BY_NAME.get(error or "", XRPCError)
    if cls is XRPCError and status == 429:
        cls = RateLimitError
    elif cls is XRPCError and status >= 500:
        cls = ServerError
    return cls(message or "", status=status, error=error, nsid=nsid, headers=headers)
