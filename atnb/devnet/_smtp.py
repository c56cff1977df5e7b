"""An SMTP sink on 127.0.0.1 that keeps every mail as a JSON file.

The PDS mails confirmation codes to it, and the front's 2FA gate mails
sign-in codes. Files are read back by :meth:`atnb.devnet.Devnet.mails`, from
any process, in arrival order.
"""

from __future__ import annotations

import email
import email.policy
import json
import time
from pathlib import Path


class _Handler:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(
            envelope.content, policy=email.policy.default
        )
        body = message.get_body(preferencelist=("plain", "html"))
        self.count += 1
        record = {
            "to": list(envelope.rcpt_tos),
            "from": envelope.mail_from,
            "subject": str(message.get("subject", "")),
            "text": body.get_content() if body is not None else "",
            "time": time.time(),
        }
        name = f"{time.time_ns()}-{self.count:05d}.json"
        tmp = self.folder / (name + ".tmp")
        tmp.write_text(json.dumps(record))
        tmp.rename(self.folder / name)
        return "250 Message accepted"


class SmtpSink:
    """Start with :meth:`start`, stop with :meth:`stop`; ``url`` for the PDS."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        self._controller = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        import logging

        from aiosmtpd.controller import Controller

        # aiosmtpd logs whole mails (sign-in codes included) at DEBUG.
        logging.getLogger("mail.log").setLevel(logging.WARNING)

        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o700)
        self._controller = Controller(
            _Handler(self.folder), hostname="127.0.0.1", port=self.port
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


def read_mails(folder: Path, to: str | None = None) -> list[dict]:
    """Every mail in ``folder``, oldest first, optionally only those sent to ``to``."""
    mails = []
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if to is None or to.lower() in (r.lower() for r in record["to"]):
            mails.append(record)
    return mails
