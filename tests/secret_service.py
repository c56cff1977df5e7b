"""A private Secret Service for tests: its own D-Bus session bus + gnome-keyring.

    with SecretService(tmp_path) as service:
        service.env        # DBUS_SESSION_BUS_ADDRESS, XDG_DATA_HOME, XDG_RUNTIME_DIR
        subprocess.run([...], env={**os.environ, **service.env})

Starts ``dbus-daemon --session --nofork`` and ``gnome-keyring-daemon
--foreground --unlock --components=secrets`` (unlock password from stdin),
waits until ``org.freedesktop.secrets`` has an owner on that bus, and on exit
stops exactly the two processes it started. The keyring file lives under a
private ``XDG_DATA_HOME``, so nothing touches the user's own keyring.

Needs the Debian packages ``dbus`` and ``gnome-keyring`` (``libsecret-tools``
adds ``secret-tool`` for checks by hand).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

__all__ = ["SecretService", "SecretServiceUnavailable", "missing_programs"]

PROGRAMS = ("dbus-daemon", "gnome-keyring-daemon")
UNLOCK_PASSWORD = b"atnb-tests\n"  # not a secret: a throwaway test keyring


class SecretServiceUnavailable(RuntimeError):
    """The daemons are missing or did not come up."""


def missing_programs() -> list[str]:
    """The programs of :data:`PROGRAMS` not on ``PATH``."""
    return [name for name in PROGRAMS if shutil.which(name) is None]


class SecretService:
    """A throwaway D-Bus session bus with an unlocked gnome-keyring on it."""

    def __init__(self, folder: Path, timeout: float = 10.0) -> None:
        self.folder = Path(folder)
        self.timeout = timeout
        self.env: dict[str, str] = {}
        self._bus: subprocess.Popen | None = None
        self._keyring: subprocess.Popen | None = None

    def __enter__(self) -> SecretService:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> dict[str, str]:
        """Start both daemons; returns the environment variables to use."""
        missing = missing_programs()
        if missing:
            raise SecretServiceUnavailable(
                f"missing {', '.join(missing)}: apt-get install -y dbus gnome-keyring"
            )
        data, runtime = self.folder / "data", self.folder / "runtime"
        for path in (data, runtime):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)

        with open(self.folder / "dbus-daemon.log", "ab") as log:
            self._bus = subprocess.Popen(
                ["dbus-daemon", "--session", "--nofork", "--print-address=1"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        address = self._bus.stdout.readline().strip()
        if not address:
            self.stop()
            raise SecretServiceUnavailable("dbus-daemon printed no address")

        self.env = {
            "DBUS_SESSION_BUS_ADDRESS": address,
            "XDG_DATA_HOME": str(data),
            "XDG_RUNTIME_DIR": str(runtime),
        }
        self._start_keyring()
        return self.env

    def _start_keyring(self) -> None:
        env = {**os.environ, **self.env}
        env.pop("DISPLAY", None)
        command = [
            "gnome-keyring-daemon",
            "--foreground",
            "--unlock",
            "--components=secrets",
        ]
        with open(self.folder / "gnome-keyring-daemon.log", "ab") as log:
            self._keyring = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
            )
        self._keyring.stdin.write(UNLOCK_PASSWORD)
        self._keyring.stdin.close()

        deadline = time.monotonic() + self.timeout
        while not self._has_owner("org.freedesktop.secrets"):
            if self._keyring.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SecretServiceUnavailable("gnome-keyring-daemon did not start")
            time.sleep(0.05)

    def _has_owner(self, name: str) -> bool:
        from jeepney import DBusAddress, new_method_call
        from jeepney.io.blocking import open_dbus_connection

        bus = DBusAddress(
            "/org/freedesktop/DBus",
            bus_name="org.freedesktop.DBus",
            interface="org.freedesktop.DBus",
        )
        with open_dbus_connection(self.env["DBUS_SESSION_BUS_ADDRESS"]) as conn:
            call = new_method_call(bus, "NameHasOwner", "s", (name,))
            reply = conn.send_and_get_reply(call, timeout=2)
        return bool(reply.body[0])

    def stop(self) -> None:
        """Stop the daemons this object started (by PID), keyring first."""
        for attr in ("_keyring", "_bus"):
            proc: subprocess.Popen | None = getattr(self, attr)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout:
                proc.stdout.close()
            setattr(self, attr, None)
