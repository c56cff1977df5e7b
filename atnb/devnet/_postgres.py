"""A private PostgreSQL cluster in a temporary folder, on 127.0.0.1 only."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from atnb.devnet._install import MissingSystemPiece


def _bindir() -> Path:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise MissingSystemPiece(
        "PostgreSQL was not found: install it "
        "(Debian: apt-get install -y postgresql), then try again."
    )


class Postgres:
    """Start and stop one throwaway cluster; ``url`` is its connection URL."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        self.data = folder / "data"
        self.socket_dir = folder / "socket"
        self.bindir = _bindir()
        self._user = None
        if os.geteuid() == 0:
            # initdb refuses to run as root; use the postgres system user.
            try:
                self._user = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise MissingSystemPiece(
                    "Running as root needs a 'postgres' user "
                    "(Debian: apt-get install -y postgresql)."
                ) from exc

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def command(self, *args: str) -> list[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._user is not None:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return cmd

    def stop_command(self) -> list[str]:
        return self.command("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def _run(self, *args: str) -> None:
        self._check(self.command(*args))

    def _check(self, cmd: list[str]) -> None:
        result = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {result.stderr.strip()[-800:]}")

    def start(self) -> None:
        for path in (self.folder, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
            if self._user is not None:
                os.chown(path, self._user.pw_uid, self._user.pw_gid)
        self._run("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres")
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.socket_dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        log = self.folder / "postgres.log"
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(log), "-w", "start"
        )

    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._check(self.stop_command())
