"""IPython magics: ``%atlogin``, ``%atlogout``, ``%atwhoami``, ``%xrpc``, ``%%xrpc``.

Loaded with ``%load_ext atnb``. Mistakes the user can fix show as one line
that names the next step, not as a traceback, and still fail the cell, so a
scheduled notebook stops there.

Non-interactive runs (CI, papermill, scheduled notebooks) log in from the
environment: when ``ATNB_IDENTIFIER`` and ``ATNB_PASSWORD`` are both set they
win over the form and the prompt (and over an identifier typed after
``%atlogin``); ``ATNB_SERVICE``, when set, is the service URL. Use an app
password there: it is never asked for an emailed sign-in code.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import shlex
from typing import Any

from IPython.core.error import StdinNotImplementedError, UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from atnb import widgets
from atnb.errors import (
    AtnbError,
    AuthFactorTokenRequired,
    LoginPendingError,
    NotLoggedInError,
    SessionExpiredError,
)

__all__ = ["AtnbMagics", "register"]

logger = logging.getLogger(__name__)

_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_STATES = (SessionExpiredError, LoginPendingError, NotLoggedInError)
STORES = ("keyring", "file", "memory")


def register(ipython: Any) -> None:
    """Register the magics and the one-line display of session errors."""
    ipython.register_magics(AtnbMagics)
    # Session errors raised by Python calls (atnb.frame, session.query) show
    # as one line and offer the form again; only if no other handler is set.
    if not ipython.custom_exceptions:
        ipython.set_custom_exc(_STATES, _custom_exc)


def unregister(ipython: Any) -> None:
    """Remove the error handler :func:`register` installed."""
    if ipython.custom_exceptions == _STATES:
        ipython.set_custom_exc((), None)


def _custom_exc(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset=None):
    if isinstance(value, NotLoggedInError) and widgets.pending_form() is not None:
        value = LoginPendingError("A login form is waiting for you")
    elif not getattr(value, "_atnb_shown", False):
        _offer_login_again(value)
    stb = _one_line(value)._render_traceback_()
    shell._showtraceback(type(value), value, stb)
    return stb


def _one_line(exc: BaseException) -> BaseException:
    """Make IPython show ``exc`` as one line instead of a traceback."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    exc._render_traceback_ = lambda: [text]
    return exc


def _in_kernel(shell: Any) -> bool:
    """True in a Jupyter kernel, where the form can be shown."""
    return getattr(shell, "kernel", None) is not None


def _session_api() -> Any:
    from atnb import session

    return session


def _offer_login_again(exc: BaseException) -> None:
    """After a session ended, show the form again (in a kernel), once."""
    exc._atnb_shown = True
    from IPython import get_ipython

    shell = get_ipython()
    if isinstance(exc, SessionExpiredError) and shell and _in_kernel(shell):
        widgets.offer_again(exc)


@magics_class
class AtnbMagics(Magics):
    """atnb's magics; see each one's ``?`` help."""

    @magic_arguments()
    @argument("identifier", nargs="?", help="handle, DID or email")
    @argument("--service", metavar="URL", help="PDS or entryway URL")
    @argument("--store", choices=STORES, help="where the session is kept")
    @argument("--prompt", action="store_true", help="ask in text, not with a form")
    @line_magic
    def atlogin(self, line: str) -> None:
        """Log in to an AT Protocol account (Bluesky), or resume a stored login.

        A stored session that is still valid is resumed without a new login.
        Otherwise a form asks for the password (an app password is recommended)
        and, if the server emails one, the sign-in code. In a terminal, or with
        --prompt, the questions are asked as text. When ATNB_IDENTIFIER and
        ATNB_PASSWORD are set (CI, papermill) they are used, with ATNB_SERVICE.
        """
        args = self._parse(self.atlogin, line)
        api = _session_api()
        store = args.store
        identifier, service = args.identifier, args.service
        env_identifier = os.environ.get("ATNB_IDENTIFIER", "").strip()
        env_password = os.environ.get("ATNB_PASSWORD", "")
        from_env = bool(env_identifier and env_password)
        if from_env or not identifier:
            identifier = env_identifier or identifier
        if os.environ.get("ATNB_SERVICE") and (from_env or not service):
            service = os.environ["ATNB_SERVICE"].strip()

        message = None
        try:
            session = self._resume(api, identifier, store)
        except SessionExpiredError as exc:
            identifier = identifier or widgets.last_identity(exc)
            service = service or widgets._last_seen.get("service")
            message = "The stored session ended; log in again."
            session = None
        if session is not None:
            print(_describe(session) + " (resumed; no new login)")
            return None

        if from_env:
            return self._login_from_env(api, identifier, env_password, service, store)
        if args.prompt or not _in_kernel(self.shell):
            return self._login_by_prompt(api, identifier, service, store, message)
        self._show_form(identifier, service, store, message)
        return None

    @magic_arguments()
    @argument("--store", choices=STORES, help="where the session is kept")
    @line_magic
    def atlogout(self, line: str) -> None:
        """Log out: revoke the session on the server and remove the stored copy.

        The local copy is removed even when the server cannot be reached; the
        message then says the revoke on the server was not confirmed.
        """
        args = self._parse(self.atlogout, line)
        api = _session_api()
        form = widgets.pending_form()
        if form is not None:
            form.close("Login cancelled by %atlogout.")
        session = api.current_session()
        if session is None:
            try:
                session = api.resume(store=args.store)
            except (NotLoggedInError, SessionExpiredError):
                session = None
        if session is None:
            print("Not logged in; nothing to log out.")
            return None

        who = getattr(session, "handle", None) or getattr(session, "did", "?")
        confirmed = self._run(session.logout)
        if confirmed:
            print(f"Logged out @{who}; the server revoked the session.")
        else:
            print(
                f"Logged out @{who} here; the server did not confirm the revoke "
                "(offline?). Run %atlogin and %atlogout again to revoke it."
            )
        return None

    @magic_arguments()
    @line_magic
    def atwhoami(self, line: str) -> None:
        """Show who is logged in: handle, DID, PDS and token expiry.

        Resumes a stored session if this kernel has none.
        """
        self._parse(self.atwhoami, line)
        session = self._require_session()
        print(_describe(session))

    @magic_arguments()
    @argument("nsid", help="the method, e.g. app.bsky.feed.searchPosts")
    @argument("params", nargs="*", metavar="key=value", help="parameters")
    @argument("--all", action="store_true", help="follow the cursor to the end")
    @argument("--max", type=int, metavar="N", help="stop after N rows (implies --all)")
    @argument("-o", "--output", metavar="VAR", help="store the result in VAR")
    @argument("--raw", action="store_true", help="the JSON answer, not a DataFrame")
    @line_magic
    def xrpc(self, line: str) -> Any:
        """Call an XRPC query and get a DataFrame (or the JSON with --raw).

        Example: %xrpc app.bsky.feed.searchPosts q="climate policy" --all --max 500
        Values quote as in a shell; a key given twice becomes a list.
        """
        args = self._parse(self.xrpc, line, intermixed=True)
        params = _params(args.params)
        if args.raw and (args.all or args.max is not None):
            raise UsageError("--raw returns one answer; drop --all/--max or --raw")
        output = _output_name(args.output)
        session = self._require_session()

        if args.raw:
            result = self._run(session.query, args.nsid, params)
        else:
            result = self._run(
                _frame(),
                args.nsid,
                params,
                session=session,
                all_pages=args.all or args.max is not None,
                max_items=args.max,
                keep_rows_in=output,
            )
        return self._deliver(result, output)

    @magic_arguments("%xrpc")
    @argument("nsid", help="the procedure, e.g. com.atproto.repo.createRecord")
    @argument("params", nargs="*", metavar="key=value", help="query parameters")
    @argument("-o", "--output", metavar="VAR", help="store the answer in VAR")
    @cell_magic("xrpc")
    def xrpc_cell(self, line: str, cell: str) -> Any:
        """Call an XRPC procedure; the cell body is its JSON input.

        Example: a cell that starts with
        %%xrpc com.atproto.repo.createRecord
        and continues with {"repo": "alice.test", "collection": ..., "record": ...}.
        """
        args = self._parse(self.xrpc_cell, line, intermixed=True)
        params = _params(args.params)
        output = _output_name(args.output)
        try:
            data = json.loads(cell) if cell.strip() else None
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"The cell body is not valid JSON (line {exc.lineno} column "
                f"{exc.colno}: {exc.msg}); fix it and run the cell again."
            ) from None
        session = self._require_session()
        result = self._run(session.procedure, args.nsid, data, params=params or None)
        return self._deliver(result, output)

    # -- helpers ---------------------------------------------------------------

    def _parse(self, func: Any, line: str, *, intermixed: bool = False) -> Any:
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"{exc}; close the quote and run it again") from None
        parser = func.parser
        return (
            parser.parse_intermixed_args(argv)
            if intermixed
            else parser.parse_args(argv)
        )

    def _run(
        self, func: Any, *args: Any, keep_rows_in: str | None = None, **kwargs: Any
    ) -> Any:
        """Call ``func``; atnb errors become one line and fail the cell.

        A pull that fails part-way leaves its rows in ``keep_rows_in``.
        """
        try:
            return func(*args, **kwargs)
        except SessionExpiredError as exc:
            _offer_login_again(exc)
            raise _one_line(exc) from None
        except AtnbError as exc:
            rows = getattr(exc, "frame", None)
            if keep_rows_in and rows is not None:
                self.shell.user_ns[keep_rows_in] = rows
                exc.message = (
                    f"{exc.message.rstrip('. ')} ({len(rows)} rows fetched before "
                    f"it are in {keep_rows_in})"
                )
            raise _one_line(exc) from None

    def _resume(self, api: Any, identifier: str | None, store: str | None) -> Any:
        current = api.current_session()
        if current is not None and _matches(current, identifier):
            widgets.remember(current)
            return current
        try:
            session = api.resume(identifier, store=store)
        except NotLoggedInError:
            return None
        except SessionExpiredError:
            raise
        except AtnbError as exc:
            raise _one_line(exc) from None
        widgets.remember(session)
        _check_alive(session)
        return session

    def _require_session(self) -> Any:
        api = _session_api()
        session = api.current_session()
        if session is not None:
            widgets.remember(session)
            return session
        if widgets.pending_form() is not None:
            exc = LoginPendingError("A login form is waiting for you")
            exc._atnb_shown = True
            raise _one_line(exc)
        session = self._run(_resume_or_none, api)
        if session is None:
            raise _one_line(NotLoggedInError("Not logged in"))
        widgets.remember(session)
        return session

    def _login_from_env(
        self, api: Any, identifier: str, password: str, service: Any, store: Any
    ) -> None:
        logger.info("%%atlogin: logging in from ATNB_IDENTIFIER (%s)", identifier)
        try:
            session = api.login(identifier, password, service=service, store=store)
        except AuthFactorTokenRequired:
            raise _one_line(
                AtnbError(
                    "The account asked for an emailed sign-in code, which a "
                    "non-interactive run cannot give",
                    hint="Put an app password in ATNB_PASSWORD; it needs no code.",
                )
            ) from None
        except AtnbError as exc:
            raise _one_line(exc) from None
        widgets.remember(session)
        print(_describe(session))

    def _login_by_prompt(
        self,
        api: Any,
        identifier: str | None,
        service: Any,
        store: Any,
        message: str | None,
    ) -> None:
        if message:
            print(message)
        try:
            if not identifier:
                identifier = input("Handle, DID or email: ").strip()
            password = getpass.getpass("Password (an app password is recommended): ")
            try:
                session = api.login(identifier, password, service=service, store=store)
            except AuthFactorTokenRequired:
                code = getpass.getpass("Sign-in code (sent to your email): ").strip()
                session = api.login(
                    identifier,
                    password,
                    auth_factor_token=code,
                    service=service,
                    store=store,
                )
        except (StdinNotImplementedError, EOFError):
            raise _one_line(
                AtnbError(
                    "This frontend cannot ask for a password",
                    hint="Set ATNB_IDENTIFIER and ATNB_PASSWORD, or run %atlogin "
                    "without --prompt in JupyterLab.",
                )
            ) from None
        except AtnbError as exc:
            raise _one_line(exc) from None
        widgets.remember(session)
        print(_describe(session))

    def _show_form(
        self, identifier: str | None, service: Any, store: Any, message: str | None
    ) -> None:
        from IPython.display import display

        old = widgets.pending_form()
        if old is not None:
            old.close("Replaced by a newer login form.")
        form = widgets.login_widget(
            identifier,
            service=service,
            store=store,
            message=message,
            on_login=widgets.remember,
        )
        display(form)

    def _deliver(self, result: Any, output: str | None) -> Any:
        if output is None:
            return result
        self.shell.user_ns[output] = result
        shape = getattr(result, "shape", None)
        if shape is not None and len(shape) == 2:
            print(f"{output}: {shape[0]} rows × {shape[1]} columns")
        else:
            print(f"{output}: {type(result).__name__}")
        return None


def _frame() -> Any:
    from atnb.frames import frame

    return frame


def _check_alive(session: Any) -> None:
    """Refresh a resumed session whose access JWT ran out, to know it is valid.

    Raises SessionExpiredError when the server refuses; a network error is
    one line (the stored session is kept).
    """
    import datetime as dt

    expires = getattr(session, "access_expires_at", None)
    if expires is None or expires > dt.datetime.now(dt.timezone.utc):
        return
    try:
        session.refresh()
    except SessionExpiredError:
        raise
    except AtnbError as exc:
        raise _one_line(exc) from None


def _resume_or_none(api: Any) -> Any:
    try:
        return api.resume()
    except NotLoggedInError:
        return None


def _matches(session: Any, identifier: str | None) -> bool:
    if not identifier:
        return True
    wanted = identifier.strip().lstrip("@").lower()
    names = (getattr(session, n, None) for n in ("handle", "did", "email"))
    return any(isinstance(n, str) and n.lower() == wanted for n in names)


def _params(items: list[str]) -> dict[str, Any]:
    """Turn ``key=value`` words into parameters; a repeated key makes a list.

    >>> _params(["q=climate policy", "tag=a", "tag=b"])
    {'q': 'climate policy', 'tag': ['a', 'b']}
    """
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(
                f"expected key=value, got {item!r}; quote values with spaces: "
                'q="climate policy"'
            )
        if key in params:
            old = params[key]
            params[key] = [*old, value] if isinstance(old, list) else [old, value]
        else:
            params[key] = value
    return params


def _output_name(name: str | None) -> str | None:
    if name is not None and not _VARIABLE.match(name):
        raise UsageError(f"-o needs a Python variable name, not {name!r}")
    return name


_describe = widgets.describe_session
