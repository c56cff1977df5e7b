"""A whole local AT Protocol network on 127.0.0.1, for tests, benchmarks and demos.

It runs the reference implementations from npm (``@atproto/dev-env``: a PLC
directory, the PDS and the Bluesky AppView) against a private PostgreSQL
cluster, with three pieces of ours around them:

- the **front**, a proxy that the network advertises as the PDS (DID
  documents and ``didDoc`` name it), which counts requests by NSID, injects
  faults, can reject a rotated refresh JWT at once as hosted servers do, and
  carries the email 2FA gate;
- the **2FA gate**, a stand-in for the hosted entryway (the open-source PDS
  ignores ``emailAuthFactor``): when on, a main-password ``createSession`` for
  an account with a confirmed email and the factor on answers 401
  ``AuthFactorTokenRequired`` and mails a code; the right code passes;
- an **SMTP sink** that keeps every mail (see :meth:`Devnet.mails`).

Use it as a context manager::

    with Devnet() as net:
        alice = net.create_account()
        ...

or from the shell: ``python -m atnb.devnet up|status|seed|down``. Nothing
listens beyond loopback, and the node process refuses outbound connections
to any other address. Secrets (JWT signing key, admin password) are made
fresh for each start.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atnb.devnet._install import MissingSystemPiece, ensure_installed
from atnb.devnet._smtp import read_mails

__all__ = [
    "URL_KEYS",
    "Account",
    "Devnet",
    "Front",
    "MissingSystemPiece",
    "default_folder",
]

READY_TIMEOUT = 180.0
URL_KEYS = ("pds_url", "pds_direct_url", "plc_url", "appview_url", "appview_did")


def default_folder() -> Path:
    """Where ``python -m atnb.devnet up`` keeps its state (``ATNB_DEVNET_DIR``)."""
    configured = os.environ.get("ATNB_DEVNET_DIR")
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"atnb-devnet-{os.getuid()}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _http(method: str, url: str, body: Any = None, *, headers=None, timeout=60.0):
    """A small JSON-over-HTTP call for the devnet's own plumbing (stdlib only)."""
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise RuntimeError(f"{method} {url} -> HTTP {exc.code}: {detail}") from None
    return json.loads(raw) if raw else None


@dataclass
class Account:
    """A devnet account. Its secrets never show in ``repr``."""

    handle: str
    did: str
    email: str
    password: str = field(repr=False)
    app_password: str | None = field(default=None, repr=False)
    access_jwt: str = field(default="", repr=False)
    refresh_jwt: str = field(default="", repr=False)


class Front:
    """Counters, faults and gates of the devnet's front (see the module doc)."""

    def __init__(self, control_url: str) -> None:
        self.control_url = control_url

    def _call(self, path: str, body: dict | None = None) -> Any:
        method = "GET" if body is None else "POST"
        return _http(method, f"{self.control_url}{path}", body)

    def counts(self) -> dict[str, int]:
        """Requests seen since the last reset, by NSID (or path)."""
        return self._call("/counts")

    def count(self, nsid: str) -> int:
        return self.counts().get(nsid, 0)

    def reset(self, *, two_factor: bool | None = None) -> None:
        """Clear counters, pending faults and rotated-token memory."""
        body = {} if two_factor is None else {"twoFactor": two_factor}
        self._call("/reset", body)

    def fault(self, nsid: str, kind: str, times: int = 1, **options: Any) -> None:
        """Inject a fault on the next ``times`` calls of ``nsid`` (``*``: any).

        Kinds: ``drop`` (close the connection), ``delay`` (``delay_ms``, then
        forward), ``html`` (``status``, default 502, with an HTML page),
        ``error`` (``status``, ``error``, ``message`` as XRPC JSON),
        ``ratelimit`` (429 with ``RateLimit-*`` headers; ``reset_in`` seconds
        or ``reset`` epoch, ``limit``, ``window``), ``replay`` (the first call
        is answered by the PDS, the next ``times - 1`` get the same answer:
        a page whose cursor never advances).
        """
        self._call("/fault", {"nsid": nsid, "kind": kind, "times": times, **options})

    def configure(
        self, *, two_factor: bool | None = None, reject_rotated: bool | None = None
    ) -> dict:
        """Turn the 2FA gate or at-once rejection of rotated refresh JWTs on/off."""
        body: dict[str, bool] = {}
        if two_factor is not None:
            body["twoFactor"] = two_factor
        if reject_rotated is not None:
            body["rejectRotated"] = reject_rotated
        return self._call("/settings", body)

    def set_2fa(self, enabled: bool) -> None:
        self.configure(two_factor=enabled)


class Devnet:
    """Start, use and stop the local network (see the module docstring)."""

    def __init__(
        self,
        folder: str | Path | None = None,
        *,
        did_doc_with_session: bool = True,
        rate_limits: bool = False,
        two_factor: bool = False,
    ) -> None:
        self.folder = Path(folder) if folder else None
        self.did_doc_with_session = did_doc_with_session
        self.rate_limits = rate_limits
        self.two_factor = two_factor
        self.info: dict[str, Any] = {}
        self._owned = False
        self._node = None
        self._postgres = None
        self._smtp = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Devnet:
        """Install what is missing, start every service and wait until ready."""
        from atnb.devnet._postgres import Postgres
        from atnb.devnet._smtp import SmtpSink

        started = time.monotonic()
        node, net_dir = ensure_installed()
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="atnb-devnet-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)  # PostgreSQL lives in a temp folder of its own
        self._owned = True

        try:
            # Its own temp folder: the postgres user must reach it, whatever
            # the permissions of the devnet's folder.
            self._postgres = Postgres(
                Path(tempfile.mkdtemp(prefix="atnb-pg-")), _free_port()
            )
            self._postgres.start()
            self._smtp = SmtpSink(self.folder / "mail", _free_port())
            self._smtp.start()
            self._start_node(node, net_dir)
        except BaseException:
            self.stop()
            raise
        self.info["cold_start_s"] = round(time.monotonic() - started, 2)
        self._write_state()
        return self

    def _start_node(self, node: Path, net_dir: Path) -> None:
        import subprocess

        script = net_dir / "start.mjs"
        shutil.copy2(Path(__file__).parent / "js" / "net" / "start.mjs", script)
        tmp = self.folder / "tmp"
        tmp.mkdir(exist_ok=True)
        jwt_secret = secrets.token_hex(32)
        config = {
            "frontPort": _free_port(),
            "pdsPort": _free_port(),
            "plcPort": _free_port(),
            "bskyPort": _free_port(),
            "ozonePort": _free_port(),
            "controlPort": _free_port(),
            "postgresUrl": self._postgres.url,
            "schema": "atnb_" + "".join(secrets.choice("abcdefghij") for _ in range(8)),
            "jwtSecret": jwt_secret,
            "adminPassword": secrets.token_hex(16),
            "smtpUrl": self._smtp.url,
            "didDocWithSession": self.did_doc_with_session,
            "rateLimits": self.rate_limits,
            "twoFactor": self.two_factor,
            "watchPid": os.getpid(),
            "orphanCommand": self._postgres.stop_command(),
        }
        env = {
            "PATH": f"{node.parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": os.environ.get("HOME", str(self.folder)),
            "TMPDIR": str(tmp),
            "REDIS_HOST": "127.0.0.1",
            "DB_POSTGRES_URL": self._postgres.url,
            "DB_POSTGRES_SCHEMA": config["schema"],
            "LOG_ENABLED": "false",
            "NODE_ENV": "development",
            "ATNB_DEVNET_CONFIG": json.dumps(config),
        }
        log = open(self.folder / "node.log", "wb")  # noqa: SIM115 (kept by Popen)
        self._node = subprocess.Popen(
            [str(node), str(script)],
            cwd=net_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        ready = self._wait_ready(self.folder / "node.log")
        self.info.update(ready)
        self.info.update(
            jwt_secret=jwt_secret,
            admin_password=config["adminPassword"],
            smtp_url=self._smtp.url,
            mail_dir=str(self._smtp.folder),
            node_pid=self._node.pid,
            postgres_pid=self._postgres.pid(),
            folder=str(self.folder),
        )

    def _wait_ready(self, log: Path) -> dict:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith('{"ready":true'):
                    return json.loads(line)
            if self._node.poll() is not None:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                raise RuntimeError(f"the devnet's node process exited:\n{tail}")
            time.sleep(0.2)
        raise TimeoutError(
            f"the devnet was not ready in {READY_TIMEOUT:.0f} s; see {log}"
        )

    def _write_state(self) -> None:
        state = self.folder / "state.json"
        state.write_text(json.dumps({**self.info, "supervisor_pid": os.getpid()}))
        os.chmod(state, 0o600)

    def stop(self) -> None:
        """Stop exactly what :meth:`start` started and remove its data."""
        if self._node is not None and self._node.poll() is None:
            self._node.send_signal(signal.SIGTERM)
            try:
                self._node.wait(timeout=20)
            except Exception:
                self._node.kill()
                self._node.wait(timeout=10)
        self._node = None
        if self._smtp is not None:
            self._smtp.stop()
            self._smtp = None
        if self._postgres is not None:
            with contextlib.suppress(Exception):
                self._postgres.stop()
            shutil.rmtree(self._postgres.folder, ignore_errors=True)
            self._postgres = None
        if self._owned and self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self._owned = False

    def __enter__(self) -> Devnet:
        return self.start() if not self.info else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @classmethod
    def attach(cls, folder: str | Path | None = None) -> Devnet:
        """Use a devnet started elsewhere (``python -m atnb.devnet up``)."""
        folder = Path(folder) if folder else default_folder()
        state = folder / "state.json"
        if not state.exists():
            raise RuntimeError(
                f"no devnet is running in {folder}: start one with "
                "`python -m atnb.devnet up`."
            )
        net = cls(folder)
        net.info = json.loads(state.read_text())
        return net

    # -- what tests and notebooks use ------------------------------------

    def __getattr__(self, name: str) -> Any:
        if name in (
            "pds_url",
            "pds_direct_url",
            "plc_url",
            "appview_url",
            "appview_did",
            "control_url",
            "pds_did",
        ):
            try:
                return self.__dict__["info"][name]
            except KeyError:
                raise AttributeError(f"the devnet is not started ({name})") from None
        raise AttributeError(name)

    def __repr__(self) -> str:
        where = self.info.get("pds_url", "not started")
        return f"<Devnet pds={where} plc={self.info.get('plc_url')}>"

    @property
    def front(self) -> Front:
        return Front(self.info["control_url"])

    def environment(self) -> dict[str, str]:
        """The ``ATNB_*`` variables that point atnb (and its kernels) at this devnet.

        Handles resolve over ``https://<handle>/.well-known/atproto-did``, which
        the host map sends to the PDS (it answers for its own handles); DNS
        look-ups are off, so nothing is asked of the system resolver.
        """
        return {
            "ATNB_SERVICE": self.info["pds_url"],
            "ATNB_PLC_URL": self.info["plc_url"],
            "ATNB_ENTRYWAY": self.info["pds_url"],
            "ATNB_PUBLIC_APPVIEW": self.info["appview_url"],
            "ATNB_NAMESERVERS": "none",
            "ATNB_HOST_MAP": f"*={self.info['pds_url']}",
            "ATNB_DEVNET": "1",
        }

    def urls(self) -> dict[str, str]:
        """The public URLs, for printing and for ``--json``."""
        return {key: self.info[key] for key in URL_KEYS}

    def xrpc(self, method: str, nsid: str, body: Any = None, *, jwt=None, direct=True):
        """Call the PDS (directly, bypassing the front's counters, by default)."""
        base = self.info["pds_direct_url" if direct else "pds_url"]
        headers = {"authorization": f"Bearer {jwt}"} if jwt else {}
        return _http(method, f"{base}/xrpc/{nsid}", body, headers=headers)

    def create_account(
        self,
        handle: str | None = None,
        email: str | None = None,
        password: str | None = None,
        *,
        app_password: bool = False,
    ) -> Account:
        """Create an account on the PDS; optionally add an app password."""
        handle = handle or f"u{secrets.token_hex(5)}.test"
        email = email or f"{handle.split('.')[0]}@mail.test"
        password = password or secrets.token_urlsafe(12)
        made = self.xrpc(
            "POST",
            "com.atproto.server.createAccount",
            {"handle": handle, "email": email, "password": password},
        )
        account = Account(
            handle=made["handle"],
            did=made["did"],
            email=email,
            password=password,
            access_jwt=made["accessJwt"],
            refresh_jwt=made["refreshJwt"],
        )
        if app_password:
            answer = self.xrpc(
                "POST",
                "com.atproto.server.createAppPassword",
                {"name": "atnb-" + secrets.token_hex(3)},
                jwt=account.access_jwt,
            )
            account.app_password = answer["password"]
        return account

    def enable_email_2fa(self, account: Account) -> None:
        """Confirm the account's email through the sink, then turn the factor on.

        The calls go through the front, which keeps the factor (the PDS does not).
        """
        jwt = account.access_jwt
        self.xrpc("POST", "com.atproto.server.requestEmailConfirmation", jwt=jwt)
        code = self.latest_code(account.email)
        self.xrpc(
            "POST",
            "com.atproto.server.confirmEmail",
            {"email": account.email, "token": code},
            jwt=jwt,
        )
        self.xrpc("POST", "com.atproto.server.requestEmailUpdate", jwt=jwt)
        code = self.latest_code(account.email)
        self.xrpc(
            "POST",
            "com.atproto.server.updateEmail",
            {"email": account.email, "emailAuthFactor": True, "token": code},
            jwt=jwt,
            direct=False,
        )
        view = self.xrpc("GET", "com.atproto.server.getSession", jwt=jwt)
        if not view.get("emailConfirmed"):
            # Updating the email clears the confirmation; confirm it again.
            self.xrpc("POST", "com.atproto.server.requestEmailConfirmation", jwt=jwt)
            self.xrpc(
                "POST",
                "com.atproto.server.confirmEmail",
                {"email": account.email, "token": self.latest_code(account.email)},
                jwt=jwt,
            )

    def mails(self, to: str | None = None) -> list[dict]:
        """Mails caught by the SMTP sink, oldest first."""
        return read_mails(Path(self.info["mail_dir"]), to)

    def latest_code(self, to: str, *, timeout: float = 10.0) -> str:
        """The newest ``XXXXX-XXXXX`` code mailed to ``to`` (waits for it)."""
        deadline = time.monotonic() + timeout
        while True:
            for mail in reversed(self.mails(to)):
                match = re.search(r"\b([A-Z0-9]{5}-[A-Z0-9]{5})\b", mail["text"])
                if match:
                    return match.group(1)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no code was mailed to {to}")
            time.sleep(0.05)

    def wait_for_indexing(self, timeout: float = 60.0) -> None:
        """Return once the AppView has indexed every write made so far."""
        _http(
            "POST",
            f"{self.info['control_url']}/process",
            {"timeout_ms": int(timeout * 1000)},
            timeout=timeout + 5,
        )

    def mint_access_jwt(
        self,
        did: str,
        *,
        exp: float | None = None,
        scope: str = "com.atproto.access",
        typ: str = "at+jwt",
        iat: float | None = None,
    ) -> str:
        """Sign an access JWT as the PDS does, with any ``exp`` (epoch seconds)."""
        now = int(time.time())
        claims = {
            "scope": scope,
            "aud": self.info.get("pds_did", "did:web:localhost"),
            "sub": did,
            "iat": int(iat if iat is not None else now),
            "exp": int(exp if exp is not None else now + 7200),
        }
        header = {"typ": typ, "alg": "HS256"}
        signing_input = (
            _b64(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64(json.dumps(claims, separators=(",", ":")).encode())
        )
        key = self.info["jwt_secret"].encode()
        signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(signature)}"
