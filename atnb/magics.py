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

import logging
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from atnb import _magic_login, widgets
from atnb._magic_args import (
    json_body,
    max_items,
    not_a_session_method,
    one_line,
    output_name,
    params,
    parse,
    require,
)
from atnb.errors import (
    AtnbError,
    LoginPendingError,
    NotLoggedInError,
    SessionExpiredError,
)

__all__ = ["AtnbMagics", "register", "unregister"]

logger = logging.getLogger(__name__)

_STATES = (SessionExpiredError, LoginPendingError, NotLoggedInError)
STORES = ("keyring", "file", "memory")
NSID_EXAMPLE = "e.g. %xrpc app.bsky.actor.getProfile actor=alice.bsky.social"


def register(ipython: Any) -> None:
    """Register the magics and the one-line display of session errors.

    Every login of this kernel, ``atnb.login()`` too, is noted so that the
    form offered after the session ends has the identifier filled in.
    """
    ipython.register_magics(AtnbMagics)
    _note_every_login()
    # Session errors raised by Python calls (atnb.frame, session.query) show
    # as one line and offer the form again; only if no other handler is set.
    if not ipython.custom_exceptions:
        ipython.set_custom_exc(_STATES, _custom_exc)


def unregister(ipython: Any) -> None:
    """Remove the magics and the error handler :func:`register` installed."""
    if ipython.custom_exceptions == _STATES:
        ipython.set_custom_exc((), None)
    manager = ipython.magics_manager
    for kind, names in AtnbMagics.magics.items():
        for name in names:
            bound = manager.magics[kind].get(name)
            if isinstance(getattr(bound, "__self__", None), AtnbMagics):
                del manager.magics[kind][name]
    manager.registry.pop(AtnbMagics.__name__, None)
    form = widgets.pending_form()
    if form is not None:
        form.close("Login cancelled: atnb was unloaded.")


_noting: list[bool] = []


def _note_every_login() -> None:
    from atnb import session

    if not _noting:  # once per process: listeners cannot be removed
        session.on("create", lambda _event, new: widgets.remember(new))
        _noting.append(True)


def _custom_exc(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset=None):
    if isinstance(value, NotLoggedInError) and widgets.pending_form() is not None:
        value = LoginPendingError("A login form is waiting for you")
    elif not getattr(value, "_atnb_shown", False):
        _offer_login_again(value)
    stb = one_line(value)._render_traceback_()
    shell._showtraceback(type(value), value, stb)
    return stb


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
        args = parse(self.atlogin, line)
        api = _session_api()
        identifier, service, env_password = _magic_login.login_inputs(args)
        store, message = args.store, None

        try:
            session = self._resume(api, identifier, store)
        except SessionExpiredError as exc:
            identifier = identifier or widgets.last_identity(exc)
            service = service or widgets.last_seen("service")
            store = store or widgets.last_seen("store")
            message = "The stored session ended; log in again."
            session = None
        if session is not None:
            return _logged_in(session, " (resumed; no new login)")

        if env_password:
            logger.info("%%atlogin: logging in from ATNB_IDENTIFIER (%s)", identifier)
            return _logged_in(
                _magic_login.login_from_env(
                    api, identifier, env_password, service, store
                )
            )
        # Offer the account seen last in this kernel, kept where it was kept.
        suggested = widgets.last_identity()
        if not identifier and store is None:
            store = widgets.last_seen("store")
        if args.prompt or not _in_kernel(self.shell):
            login = _magic_login.Login(api, identifier, service, store, message)
            return _logged_in(login.by_prompt(suggested))
        self._show_form(identifier or suggested, service, store, message)
        return None

    @magic_arguments()
    @argument("--store", choices=STORES, help="where the session is kept")
    @line_magic
    def atlogout(self, line: str) -> None:
        """Log out: revoke the session on the server and remove the stored copy.

        The local copy is removed even when the server cannot be reached; the
        message then says the revoke on the server was not confirmed.
        """
        args = parse(self.atlogout, line)
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
        parse(self.atwhoami, line)
        session = self._session_for(None)
        self._run(_magic_login.check_alive, session)
        print(widgets.describe_session(session))

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
        Values quote as in a shell; a key given twice becomes a list. Before
        any login, public app.bsky reads go to the public AppView.
        """
        if not line.strip():
            raise UsageError(f"%xrpc needs an NSID, {NSID_EXAMPLE}")
        args = parse(self.xrpc, line, intermixed=True)
        nsid = not_a_session_method(require(_check_nsid, args.nsid))
        query, limit = params(args.params), max_items(args.max)
        if args.raw and (args.all or limit is not None):
            raise UsageError("--raw returns one answer; drop --all/--max or --raw")
        output = output_name(args.output)
        session = self._session_for(nsid)

        if args.raw and session is None:
            result = self._run(_public_query, nsid, query)
        elif args.raw:
            result = self._run(session.query, nsid, query)
        else:
            result = self._run(
                _frame(),
                nsid,
                query,
                session=session,
                all_pages=args.all or limit is not None,
                max_items=limit,
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
        if not line.strip():
            raise UsageError(
                "%%xrpc needs an NSID, e.g. %%xrpc com.atproto.repo.createRecord"
            )
        args = parse(self.xrpc_cell, line, intermixed=True, cell=True)
        nsid = not_a_session_method(require(_check_nsid, args.nsid))
        query, output = params(args.params), output_name(args.output)
        data = json_body(cell)
        session = self._session_for(None)
        result = self._run(session.procedure, nsid, data, params=query or None)
        return self._deliver(result, output)

    # -- helpers ---------------------------------------------------------------

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
            raise one_line(exc) from None
        except AtnbError as exc:
            rows = getattr(exc, "frame", None)
            if keep_rows_in and rows is not None:
                self.shell.user_ns[keep_rows_in] = rows
                exc.message = (
                    f"{exc.message.rstrip('. ')} ({len(rows)} rows fetched before "
                    f"it are in {keep_rows_in})"
                )
            raise one_line(exc) from None

    def _resume(self, api: Any, identifier: str | None, store: str | None) -> Any:
        current = api.current_session()
        if current is not None and _magic_login.matches(current, identifier):
            widgets.remember(current)
            _magic_login.check_alive(current)
            return current
        try:
            session = api.resume(identifier, store=store)
        except NotLoggedInError:
            return None
        except SessionExpiredError:
            raise
        except AtnbError as exc:
            raise one_line(exc) from None
        widgets.remember(session)
        _magic_login.check_alive(session)
        return session

    def _session_for(self, nsid: str | None) -> Any:
        """The session to call with; None for a public read before any login.

        Raises LoginPendingError while a form waits, else NotLoggedInError.
        """
        api = _session_api()
        session = api.current_session()
        if session is None and widgets.pending_form() is not None:
            exc = LoginPendingError("A login form is waiting for you")
            exc._atnb_shown = True
            raise one_line(exc)
        if session is None:
            session = self._run(_resume_or_none, api)
        if session is not None:
            widgets.remember(session)
            return session
        if nsid is not None and _public_read(nsid):
            logger.info("%s: not logged in; reading from the public AppView", nsid)
            return None
        raise one_line(NotLoggedInError("Not logged in"))

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


def _logged_in(session: Any, note: str = "") -> None:
    """Show the session %atlogin found or made; close a form left waiting."""
    widgets.remember(session)
    form = widgets.pending_form()
    if form is not None:
        form.close("Closed: logged in by a later %atlogin.")
    print(widgets.describe_session(session) + note)


def _check_nsid(nsid: str) -> str:
    from atnb.xrpc import check_nsid

    return check_nsid(nsid)


def _public_read(nsid: str) -> bool:
    """True for an ``app.bsky`` read the public AppView answers without login."""
    from atnb.frames import is_public_read

    return is_public_read(nsid)


def _public_query(nsid: str, query: dict[str, Any]) -> Any:
    from atnb import xrpc
    from atnb.config import settings

    data, _headers = xrpc.query(settings.public_appview, nsid, query)
    return data


def _frame() -> Any:
    from atnb.frames import frame

    return frame


def _resume_or_none(api: Any) -> Any:
    try:
        return api.resume()
    except NotLoggedInError:
        return None
