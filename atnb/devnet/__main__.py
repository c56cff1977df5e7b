"""``python -m atnb.devnet up|down|status|seed``: the local network from a shell.

``up`` starts the network in the background (a small supervisor process owns
PostgreSQL, the SMTP sink and the node services), waits until it answers and
prints its URLs (``--json`` for scripts; ``--seed`` also writes the sample
data). ``down`` stops exactly what ``up`` started and removes its data.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from atnb.devnet import URL_KEYS, Devnet, MissingSystemPiece, default_folder


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _state(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "state.json").read_text())
    except (OSError, ValueError):
        return None


def _print_logins() -> None:
    """The seeded sample accounts and their throwaway devnet passwords."""
    from atnb.devnet.seed import NAMES, TWO_FACTOR_NAME, password_for

    print("sample accounts (throwaway devnet logins):")
    for name in [*NAMES, TWO_FACTOR_NAME]:
        note = "  (email sign-in codes on)" if name == TWO_FACTOR_NAME else ""
        print(f"  {name + '.test':12} password {password_for(name)}{note}")


def cmd_serve(args: argparse.Namespace) -> int:
    """The supervisor: run the devnet until SIGTERM, then stop it."""
    folder = Path(args.dir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    net = Devnet(folder / "net", two_factor=True)
    try:
        net.start()
        if args.seed:
            from atnb.devnet.seed import seed

            seed(net)
        state = {**net.info, "supervisor_pid": os.getpid(), "ready": True}
        tmp = folder / "state.json.tmp"
        tmp.write_text(json.dumps(state))
        tmp.chmod(0o600)
        tmp.rename(folder / "state.json")
        stop.wait()
    except Exception as exc:
        print(f"devnet failed: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        net.stop()
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    folder = default_folder()
    state = _state(folder)
    if state and _alive(state.get("supervisor_pid")):
        print(f"already running (pid {state['supervisor_pid']}); `down` stops it.")
        return _report(state, args)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    (folder / "state.json").unlink(missing_ok=True)
    log = open(folder / "supervisor.log", "wb")  # noqa: SIM115 (kept by Popen)
    command = [sys.executable, "-m", "atnb.devnet", "_serve", "--dir", str(folder)]
    if args.seed:
        command.append("--seed")
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    while time.monotonic() - started < 600:
        state = _state(folder)
        if state and state.get("ready"):
            state["cold_start_s"] = round(time.monotonic() - started, 1)
            return _report(state, args)
        if process.poll() is not None:
            tail = (folder / "supervisor.log").read_text(errors="replace")[-2000:]
            print(f"the devnet did not start:\n{tail}", file=sys.stderr)
            return 1
        time.sleep(0.3)
    print("the devnet did not start in 10 minutes; see supervisor.log", file=sys.stderr)
    return 1


def _report(state: dict, args: argparse.Namespace) -> int:
    urls = {key: state[key] for key in URL_KEYS}
    if args.json:
        print(json.dumps({**urls, "folder": str(default_folder())}))
        return 0
    for key, value in urls.items():
        print(f"{key:15} {value}")
    if state.get("cold_start_s"):
        print(f"ready in {state['cold_start_s']} s")
    if getattr(args, "seed", False):
        _print_logins()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state = _state(default_folder())
    if not state or not _alive(state.get("supervisor_pid")):
        print("not running")
        return 1
    try:
        from atnb.devnet import _http

        health = _http("GET", f"{state['pds_url']}/xrpc/_health", timeout=5)
    except Exception as exc:
        print(f"running, but the PDS did not answer: {exc}")
        return 1
    print(f"running (pid {state['supervisor_pid']}), PDS {health.get('version')}")
    return _report(state, args)


def cmd_env(args: argparse.Namespace) -> int:
    state = _state(default_folder())
    if not state or not _alive(state.get("supervisor_pid")):
        print("atnb.devnet: not running; start it with `up`", file=sys.stderr)
        return 1
    net = Devnet(default_folder())
    net.info = state
    for name, value in net.environment().items():
        print(f"export {name}={value}")
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from atnb.devnet.seed import seed

    net = Devnet.attach()
    seed(net)
    _print_logins()
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    import shutil

    folder = default_folder()
    state = _state(folder) or {}
    pid = state.get("supervisor_pid")
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    for key in ("node_pid", "postgres_pid"):
        if _alive(state.get(key)):
            print(f"{key} {state[key]} still running; stopping it")
            os.kill(state[key], signal.SIGTERM)
    shutil.rmtree(folder, ignore_errors=True)
    print("stopped" if pid else "not running")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m atnb.devnet", description=__doc__)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="{up,down,status,seed,env}"
    )
    up = sub.add_parser("up", help="start the network in the background")
    up.add_argument("--json", action="store_true", help="print the URLs as JSON")
    up.add_argument("--seed", action="store_true", help="also write the sample data")
    sub.add_parser("down", help="stop it and remove its data")
    status = sub.add_parser("status", help="say whether it runs, and where")
    status.add_argument("--json", action="store_true")
    sub.add_parser("seed", help="write the sample accounts and posts")
    sub.add_parser("env", help="print shell exports that point atnb at it")
    serve = sub.add_parser("_serve", help=argparse.SUPPRESS)
    serve.add_argument("--dir", required=True)
    serve.add_argument("--seed", action="store_true")
    args = parser.parse_args(argv)
    handlers = {
        "up": cmd_up,
        "down": cmd_down,
        "status": cmd_status,
        "seed": cmd_seed,
        "env": cmd_env,
        "_serve": cmd_serve,
    }
    try:
        return handlers[args.command](args)
    except MissingSystemPiece as exc:
        print(f"atnb.devnet: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"atnb.devnet: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
