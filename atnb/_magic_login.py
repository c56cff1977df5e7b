"""How ``%atlogin`` finds or makes a session when no form is involved.

What the line and ``ATNB_*`` ask for, whether a resumed session is still
alive, and the text questions: terminal IPython, frontends without widgets
and ``%atlogin --prompt`` ask with ``input`` and ``getpass``. A wrong
sign-in code is asked again, a few times at most; every failure is one line
that ends with the next step.
"""

from __future__ import annotations

import getpass
import os
from typing import Any

from IPython.core.error import StdinNotImplementedError

from atnb._magic_args import one_line, require
from atnb.errors import (
    AtnbError,
    AuthFactorTokenRequired,
    NetworkError,
    SessionExpiredError,
)

__all__ = [
    "MAX_CODE_TRIES",
    "Login",
    "check_alive",
    "login_from_env",
    "login_inputs",
    "matches",
]

MAX_CODE_TRIES = 3
PASSWORD_PROMPT = "Password (an app password is recommended): "
CODE_PROMPT = "Sign-in code (sent to your email): "
CODE_AGAIN_PROMPT = "That code was not accepted; the latest sign-in code: "
OFFLINE_HINT = "Check the connection and the service URL, then run %atlogin again."


def _failed(exc: AtnbError) -> BaseException:
    """A failed login as one line; "the session was kept" fits no login."""
    if isinstance(exc, NetworkError):
        exc.hint = OFFLINE_HINT
    return one_line(exc)


class Login:
    """One login by text questions; the password lives only in local names."""

    def __init__(
        self,
        api: Any,
        identifier: str | None,
        service: str | None,
        store: str | None,
        message: str | None = None,
    ) -> None:
        self.api, self.identifier = api, identifier
        self.service, self.store, self.message = service, store, message

    def by_prompt(self, suggested: str | None = None) -> Any:
        """Ask for what is missing and log in; errors are one line.

        Args:
            suggested: the identifier offered when the user just presses Enter.
        """
        if self.message:
            print(self.message)
        try:
            identifier = self.identifier or _ask_identifier(suggested)
            password = _ask_secret(PASSWORD_PROMPT)
            if not password:
                raise AtnbError(
                    "No password entered",
                    hint="Run %atlogin again and type the password "
                    "(an app password is recommended).",
                )
            return self._login(identifier, password)
        except (StdinNotImplementedError, EOFError, getpass.GetPassWarning):
            raise one_line(
                AtnbError(
                    "This frontend cannot ask for a password without echoing it",
                    hint="Set ATNB_IDENTIFIER and ATNB_PASSWORD, or run %atlogin "
                    "without --prompt in JupyterLab.",
                )
            ) from None
        except AtnbError as exc:
            raise _failed(exc) from None

    def _login(self, identifier: str, password: str) -> Any:
        try:
            return self._call(identifier, password, None)
        except AuthFactorTokenRequired:
            pass
        prompt = CODE_PROMPT
        for _ in range(MAX_CODE_TRIES):
            code = _ask_secret(prompt).strip()
            if not code:
                raise AtnbError(
                    "No sign-in code entered",
                    hint="Run %atlogin again; the server emails a new code.",
                )
            try:
                return self._call(identifier, password, code)
            except AuthFactorTokenRequired:
                prompt = CODE_AGAIN_PROMPT
        raise AtnbError(
            f"The sign-in code was not accepted {MAX_CODE_TRIES} times",
            hint="Run %atlogin again; the server emails a new code.",
        )

    def _call(self, identifier: str, password: str, code: str | None) -> Any:
        return self.api.login(
            identifier,
            password,
            auth_factor_token=code,
            service=self.service,
            store=self.store,
        )


def _ask_identifier(suggested: str | None) -> str:
    offer = f" [{suggested}]" if suggested else ""
    identifier = input(f"Handle, DID or email{offer}: ").strip() or suggested
    if not identifier:
        raise AtnbError(
            "No handle entered",
            hint="Run %atlogin alice.bsky.social (your handle) again.",
        )
    return identifier


def login_from_env(
    api: Any, identifier: str, password: str, service: Any, store: Any
) -> Any:
    """Log in with ``ATNB_IDENTIFIER``/``ATNB_PASSWORD``; errors are one line."""
    try:
        return api.login(identifier, password, service=service, store=store)
    except AuthFactorTokenRequired:
        raise one_line(
            AtnbError(
                "The account asked for an emailed sign-in code, which a "
                "non-interactive run cannot give",
                hint="Put an app password in ATNB_PASSWORD; it needs no code.",
            )
        ) from None
    except AtnbError as exc:
        raise _failed(exc) from None


def login_inputs(args: Any) -> tuple[str | None, str | None, str]:
    """Identifier, checked service URL and password from the line and ATNB_*.

    The password is empty unless both ATNB_IDENTIFIER and ATNB_PASSWORD are
    set. A malformed identifier, or a service URL that is not HTTPS (or
    loopback), is refused here in one line, before anything is asked or sent.
    """
    identifier, service = args.identifier, args.service
    env_identifier = os.environ.get("ATNB_IDENTIFIER", "").strip()
    env_password = os.environ.get("ATNB_PASSWORD", "")
    from_env = bool(env_identifier and env_password)
    if from_env or not identifier:
        identifier = env_identifier or identifier
    if os.environ.get("ATNB_SERVICE") and (from_env or not service):
        service = os.environ["ATNB_SERVICE"].strip()
    if identifier:
        from atnb.identity import normalize_identifier

        require(normalize_identifier, identifier, echo=False)
    if service:
        from atnb.xrpc import check_service_url

        service = require(check_service_url, service, allow_loopback_http=True)
    return identifier, service, env_password if from_env else ""


def check_alive(session: Any) -> None:
    """Check that a resumed session is still usable before saying so.

    An inactivity timeout ends it here (as any use would); an access JWT
    that ran out is refreshed. Raises SessionExpiredError when the session
    ended or the server refuses; a network error is one line (the stored
    session is kept).
    """
    import datetime as dt

    # A session resumed earlier in this kernel may have gone unused since.
    usable = getattr(session, "_check_usable", None)
    expires = getattr(session, "access_expires_at", None)
    try:
        if callable(usable):
            usable()
        if expires is not None and expires <= dt.datetime.now(dt.timezone.utc):
            session.refresh()
    except SessionExpiredError:
        raise
    except AtnbError as exc:
        raise one_line(exc) from None


def matches(session: Any, identifier: str | None) -> bool:
    if not identifier:
        return True
    wanted = identifier.strip().lstrip("@").lower()
    names = (getattr(session, n, None) for n in ("handle", "did", "email"))
    return any(isinstance(n, str) and n.lower() == wanted for n in names)


def _ask_secret(prompt: str) -> str:
    """``getpass``, refusing to read a secret that would be echoed.

    Without a terminal, ``getpass`` falls back to reading standard input
    with echo on (and would take the next line of a script as the
    password); that warning is turned into a refusal here.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", getpass.GetPassWarning)
        return getpass.getpass(prompt)
