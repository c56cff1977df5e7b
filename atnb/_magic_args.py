"""Reading what a user typed after a magic: words, ``key=value``, flags, JSON.

Every mistake raises IPython's ``UsageError`` with one line that ends with
the next step; nothing here sends a request.
"""

from __future__ import annotations

import json
import keyword
import shlex
from typing import Any

from IPython.core.error import UsageError

__all__ = [
    "SERVICE_HINT",
    "SESSION_METHODS",
    "json_body",
    "max_items",
    "not_a_session_method",
    "one_line",
    "output_name",
    "params",
    "parse",
    "require",
]


SERVICE_HINT = (
    "Check the handle, or run %atlogin again with --service and your PDS URL."
)


def one_line(exc: BaseException) -> BaseException:
    """Make IPython show ``exc`` as one line instead of a traceback.

    A next step written for Python callers (``service=``) is said the way
    a magic takes it (``--service``).
    """
    from atnb.errors import ResolutionError

    if isinstance(exc, ResolutionError) and "service=" in exc.hint:
        exc.hint = SERVICE_HINT
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    exc._render_traceback_ = lambda: [text]
    return exc


def require(check: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a local check; an atnb error it raises becomes one line."""
    from atnb.errors import AtnbError

    try:
        return check(*args, **kwargs)
    except AtnbError as exc:
        raise one_line(exc) from None


def parse(func: Any, line: str, *, intermixed: bool = False, cell: bool = False) -> Any:
    """Split ``line`` as a shell would and parse it with the magic's parser."""
    name = ("%%" if cell else "%") + func.parser.prog.lstrip("%")
    try:
        argv = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"{exc}; close the quote and run it again") from None
    try:
        if intermixed:
            return func.parser.parse_intermixed_args(argv)
        return func.parser.parse_args(argv)
    except UsageError as exc:
        text = str(exc)
        if name == "%atlogin" and text.startswith("unrecognized arguments"):
            # Never repeat the extra words: they may be a password.
            text = (
                "%atlogin takes one identifier; the password is asked for, never "
                "typed on the line (the line is saved with the notebook)"
            )
        raise UsageError(f"{text}; see {name}? for the usage") from None


# Methods that make, rotate or end a session: through %xrpc their JWTs would
# land in the notebook, or the session atnb keeps would stop working.
SESSION_METHODS = {
    "com.atproto.server.createSession": "log in with %atlogin",
    "com.atproto.server.refreshSession": "atnb refreshes the session by itself",
    "com.atproto.server.deleteSession": "log out with %atlogout",
    "com.atproto.server.createAccount": "use atnb.create_account()",
}


def not_a_session_method(nsid: str) -> str:
    """Refuse the methods in :data:`SESSION_METHODS`; return ``nsid``.

    >>> not_a_session_method("app.bsky.actor.getProfile")
    'app.bsky.actor.getProfile'
    """
    instead = SESSION_METHODS.get(nsid)
    if instead:
        raise UsageError(
            f"{nsid} would put session tokens in the notebook; {instead} instead"
        )
    return nsid


def params(items: list[str]) -> dict[str, Any]:
    """Turn ``key=value`` words into parameters; a repeated key makes a list.

    Values stay text: the server reads ``limit=5`` and ``flag=true`` as it
    reads them in a URL.

    >>> params(["q=climate policy", "tag=a", "tag=b"])
    {'q': 'climate policy', 'tag': ['a', 'b']}
    """
    found: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(
                f"expected key=value, got {item!r}; quote values with spaces: "
                'q="climate policy"'
            )
        if key in found:
            old = found[key]
            found[key] = [*old, value] if isinstance(old, list) else [old, value]
        else:
            found[key] = value
    return found


def output_name(name: str | None) -> str | None:
    """Check the name given to ``-o``: a Python variable, not a keyword.

    >>> output_name("posts")
    'posts'
    """
    if name is not None and (not name.isidentifier() or keyword.iskeyword(name)):
        raise UsageError(
            f"-o needs a Python variable name, not {name!r}; e.g. -o posts"
        )
    return name


def max_items(value: int | None) -> int | None:
    """Check ``--max N``: a positive number of rows."""
    if value is not None and value < 1:
        raise UsageError(f"--max needs a positive number of rows, not {value}")
    return value


def json_body(cell: str) -> dict | None:
    """The JSON object in a ``%%xrpc`` cell body; None when the body is empty."""
    if not cell.strip():
        return None
    try:
        data = json.loads(cell)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"The cell body is not valid JSON (line {exc.lineno} column "
            f"{exc.colno}: {exc.msg}); fix it and run the cell again."
        ) from None
    if not isinstance(data, dict):
        raise UsageError(
            f"The cell body must be a JSON object {{...}}, not a "
            f"{type(data).__name__}; fix it and run the cell again."
        )
    return data
