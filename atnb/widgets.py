"""The login form for notebooks: ``atnb.login_widget()`` and ``%atlogin``.

The form has an identifier field, a password field (an app password is
recommended, and the form says so), a sign-in code field that appears only
when the server answers ``AuthFactorTokenRequired``, a Log in button and a
status line. Each field carries a CSS class (``atnb-identifier``,
``atnb-password``, ``atnb-code``, ``atnb-login``, ``atnb-status``).

A notebook is saved with its widget state, so the password and the code are
cleared from their fields the moment they are read. While the server waits
for the emailed code, the password is held by the form object in memory
(never in a widget) for the retry, and dropped once the login ends.

On success the form is replaced by a status naming the handle, DID, PDS and
token expiry. An error is one line in the status, and the form stays usable.

A form that waits for the user does not block the kernel; while it waits,
:func:`pending_form` returns it so other calls can say "finish the login
form above" (:class:`~atnb.errors.LoginPendingError`).
"""

from __future__ import annotations

import datetime as _dt
import html
import logging
from collections.abc import Callable
from typing import Any

from atnb.errors import (
    AtnbError,
    AuthenticationError,
    AuthFactorTokenRequired,
    NetworkError,
    ResolutionError,
)

__all__ = [
    "LoginForm",
    "describe_session",
    "last_identity",
    "last_seen",
    "login_widget",
    "offer_again",
    "pending_form",
    "remember",
]

logger = logging.getLogger(__name__)

APP_PASSWORD_NOTE = (
    "An app password is recommended (Bluesky: Settings → Privacy and security "
    "→ App passwords). Your main password works too."
)
PLAIN_TEXT = (
    "atnb login form: it needs a frontend that shows widgets (JupyterLab, "
    "Notebook 7, VS Code). Elsewhere run %atlogin --prompt, or set "
    "ATNB_IDENTIFIER and ATNB_PASSWORD."
)

RESOLUTION_HINT = (
    "Check the handle, or give your PDS's URL: %atlogin <handle> --service URL."
)
OFFLINE_HINT = "Check the connection, then press Log in again."
CODE_SENT = (
    "The server sent a sign-in code to the account's email; "
    "enter it above and press Log in."
)
CODE_REJECTED = (
    "That sign-in code was not accepted; enter the latest code from your "
    "email and press Log in."
)

_waiting: list[LoginForm] = []


def pending_form() -> LoginForm | None:
    """Return the newest login form still waiting for the user, or None."""
    for form in reversed(_waiting):
        if form.waiting:
            return form
    return None


def login_widget(
    identifier: str | None = None,
    *,
    service: str | None = None,
    store: Any = None,
    message: str | None = None,
    on_login: Callable[[Any], None] | None = None,
) -> LoginForm:
    """Build the login form; display it as the last expression of a cell.

    Args:
        identifier: fills the identifier field (handle, DID or email).
        service: the PDS or entryway URL passed to :func:`atnb.login`.
        store: the session store passed to :func:`atnb.login`.
        message: a first line for the status, e.g. why a new login is needed.
        on_login: called with the new :class:`~atnb.session.Session`.

    Returns:
        The :class:`LoginForm`; ``form.session`` holds the session once the
        user has logged in.
    """
    return LoginForm(
        identifier, service=service, store=store, message=message, on_login=on_login
    )


_last_seen: dict[str, str] = {}


def remember(session: Any) -> None:
    """Note who was logged in (handle, DID, service, store) to refill a form."""
    store = getattr(getattr(session, "store", None), "name", None)
    for name, value in [
        ("handle", getattr(session, "handle", None)),
        ("did", getattr(session, "did", None)),
        ("service", getattr(session, "service", None)),
        ("store", store if store in ("keyring", "file", "memory") else None),
    ]:
        if isinstance(value, str) and value:
            _last_seen[name] = value


def last_seen(name: str) -> str | None:
    """What :func:`remember` noted last: ``handle``, ``did``, ``service``, ``store``."""
    return _last_seen.get(name)


def last_identity(exc: BaseException | None = None) -> str | None:
    """The handle (or DID) of ``exc``'s account, else of the last session seen."""
    for name in ("handle", "did", "account"):
        value = getattr(exc, name, None)
        if isinstance(value, str) and value:
            return value
    return _last_seen.get("handle") or _last_seen.get("did")


def offer_again(exc: BaseException | None = None) -> LoginForm | None:
    """Show the form after a session ended, identifier filled in; once.

    Returns the new form, or None when one is already waiting (so a notebook
    never stacks forms or loops).
    """
    if pending_form() is not None:
        return None
    from IPython.display import display

    form = login_widget(
        last_identity(exc),
        service=_last_seen.get("service"),
        store=_last_seen.get("store"),
        message="The session ended; log in again to continue.",
    )
    display(form)
    return form


def describe_session(session: Any) -> str:
    """One line naming who is logged in, where, and until when.

    Reads only public attributes (handle, DID, PDS, expiry), never a token.
    """
    handle = getattr(session, "handle", None) or "?"
    did = getattr(session, "did", None) or "?"
    pds_url = getattr(session, "pds_url", None) or "?"
    expires = _format_time(getattr(session, "access_expires_at", None))
    return (
        f"Logged in as @{handle} ({did}) on {pds_url}; "
        f"access token valid until {expires}."
    )


def _format_time(value: Any) -> str:
    if isinstance(value, (int, float)):
        value = _dt.datetime.fromtimestamp(value, tz=_dt.timezone.utc)
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_dt.timezone.utc)
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return "unknown"


def _one_line(exc: BaseException) -> str:
    """The error as one readable line (atnb messages carry no secrets)."""
    if isinstance(exc, AuthenticationError):
        return "Wrong identifier or password. An app password is recommended."
    if isinstance(exc, ResolutionError) and "service=" in exc.hint:
        text = f"{exc.message.rstrip('. ')}. {RESOLUTION_HINT}"
    elif isinstance(exc, NetworkError):
        text = f"{exc.message.rstrip('. ')}. {OFFLINE_HINT}"
    elif isinstance(exc, AtnbError):
        text = str(exc)
    else:
        text = f"Login failed ({type(exc).__name__}); see the kernel log."
    return " ".join(text.split())


class LoginForm:
    """A login form bound to one kernel; see :func:`login_widget`.

    Attributes:
        session: the session after a successful login, else None.
        identifier, password, code, button, status: the widgets.
        box: the container shown in the notebook.
    """

    def __init__(
        self,
        identifier: str | None = None,
        *,
        service: str | None = None,
        store: Any = None,
        message: str | None = None,
        on_login: Callable[[Any], None] | None = None,
        login: Callable[..., Any] | None = None,
    ) -> None:
        import ipywidgets as w

        self.service = service
        self.store = store
        self.session: Any = None
        self._on_login = on_login
        self._login = login
        self._held_password: str | None = None
        self._held_for: str | None = None
        self._closed = False

        label = {"description_width": "7em"}
        self.identifier = w.Text(
            value=identifier or "",
            description="Handle",
            placeholder="alice.bsky.social, a DID or an email",
            style=label,
        )
        self.password = w.Password(description="Password", style=label)
        self.note = w.HTML(f"<small>{html.escape(APP_PASSWORD_NOTE)}</small>")
        self.code = w.Text(
            description="Sign-in code",
            placeholder="the code from your email",
            style=label,
            layout=w.Layout(display="none"),
        )
        self.button = w.Button(description="Log in", button_style="primary")
        self.status = w.HTML(html.escape(message or ""))

        for widget, name in [
            (self.identifier, "identifier"),
            (self.password, "password"),
            (self.note, "note"),
            (self.code, "code"),
            (self.button, "login"),
            (self.status, "status"),
        ]:
            widget.add_class(f"atnb-{name}")
        self.box = w.VBox(
            [
                self.identifier,
                self.password,
                self.note,
                self.code,
                self.button,
                self.status,
            ]
        )
        self.box.add_class("atnb-login-form")
        self.button.on_click(lambda _button: self.submit())
        _waiting.append(self)

    @property
    def waiting(self) -> bool:
        """True until the user has logged in or the form was closed."""
        return self.session is None and not self._closed

    @property
    def code_requested(self) -> bool:
        """True once the server asked for an emailed sign-in code."""
        return self.code.layout.display != "none"

    def submit(self) -> Any:
        """Read the fields and log in; the Log in button calls this.

        Returns:
            The session on success, else None (the status says why).
        """
        # Read the secrets and clear them from the widgets at once, whatever
        # happens next (a closed form too: nothing typed there may linger).
        identifier = self.identifier.value.strip()
        typed, code = self.password.value, self.code.value.strip() or None
        self._clear_secrets()
        if not self.waiting:
            return self.session
        if identifier != self._held_for:
            self._hold(None)  # it was held for another identifier
            self.code.layout.display = "none"
        password = typed or self._held_password

        problem = self._missing(identifier, password, code)
        if problem:
            self._hold(password if self.code_requested else None, identifier)
            self._show(problem, error=True)
            return None

        self.button.disabled = True
        self._show("Logging in…")
        try:
            session = self._call_login(identifier, password, code)
        except AuthFactorTokenRequired:
            # The code retry needs the password; keep it here, not in a widget.
            self._hold(password, identifier)
            self.code.layout.display = None
            self._show(CODE_REJECTED if code else CODE_SENT, error=bool(code))
            return None
        except Exception as exc:  # every failure becomes one line in the status
            self._hold(None)
            logger.info("login form: login failed (%s)", type(exc).__name__)
            self._show(_one_line(exc), error=True)
            return None
        finally:
            password = code = None
            self.button.disabled = False

        self._succeed(session)
        return session

    def close(self, message: str | None = None) -> None:
        """Stop waiting; show ``message`` instead of the form, if given.

        Whatever was typed in the password and code fields is cleared, and
        the Log in button no longer logs in.
        """
        self._closed = True
        self._hold(None)
        self._clear_secrets()
        self.button.disabled = True
        if message is not None:
            self.status.value = html.escape(message)
            self._replace_with_status()
        if self in _waiting:
            _waiting.remove(self)

    def _clear_secrets(self) -> None:
        self.password.value = ""
        self.code.value = ""

    def _hold(self, password: str | None, identifier: str | None = None) -> None:
        self._held_password = password
        self._held_for = identifier if password else None

    def _missing(self, identifier: str, password: str | None, code: str | None) -> str:
        if not identifier:
            return "Enter your handle, DID or email."
        if not password:
            return "Enter your password (an app password is recommended)."
        if self.code_requested and not code:
            return "Enter the sign-in code from your email."
        return ""

    def _call_login(self, identifier: str, password: str, code: str | None) -> Any:
        login = self._login
        if login is None:
            from atnb.session import login
        return login(
            identifier,
            password,
            auth_factor_token=code,
            service=self.service,
            store=self.store,
        )

    def _succeed(self, session: Any) -> None:
        self.session = session
        self._hold(None)
        line = describe_session(session)
        self.status.value = f"<b>✓</b> {html.escape(line)}"
        self._replace_with_status()
        if self in _waiting:
            _waiting.remove(self)
        logger.info("login form: logged in as %s", getattr(session, "did", "?"))
        remember(session)
        if self._on_login is not None:
            self._on_login(session)

    def _replace_with_status(self) -> None:
        self.box.children = (self.status,)
        for widget in (self.password, self.code, self.note, self.button):
            widget.close()

    def _show(self, text: str, *, error: bool = False) -> None:
        escaped = html.escape(text)
        self.status.value = (
            f'<span style="color: var(--jp-error-color1, #c00)">{escaped}</span>'
            if error
            else escaped
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        bundle = self.box._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        data["text/plain"] = PLAIN_TEXT if self.waiting else self.status_text
        return bundle

    @property
    def status_text(self) -> str:
        """The status line as plain text."""
        return html.unescape(_strip_tags(self.status.value))

    def __repr__(self) -> str:
        state = "waiting" if self.waiting else "done" if self.session else "closed"
        return f"<LoginForm identifier={self.identifier.value!r} {state}>"


def _strip_tags(text: str) -> str:
    out, inside = [], False
    for char in text:
        if char == "<":
            inside = True
        elif char == ">":
            inside = False
        elif not inside:
            out.append(char)
    return "".join(out)
