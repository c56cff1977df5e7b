"""Session benchmarks on the devnet: refresh storm and resume round trips.

    python benchmarks/bench_session.py            # starts a devnet (~15 s)
    python benchmarks/bench_session.py --attach   # uses `python -m atnb.devnet up`

Refresh storm: 32 threads call ``getSession`` at once on a session whose
access JWT has expired; the front counts how many ``refreshSession`` calls
reach it (goal: exactly 1) and the wall time of the whole storm. Run both
ways: the client sees the expiry (proactive) or only the server does
(reactive, ``400 ExpiredToken``).

Resume: a new Python process resumes the stored session (file store) and
makes one data call; the front counts the round trips before that call
(goal: 0 extra while the access JWT is valid).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import atnb  # noqa: E402
from atnb import store as store_mod  # noqa: E402
from atnb.devnet import Devnet  # noqa: E402

GET_SESSION = "com.atproto.server.getSession"
REFRESH = "com.atproto.server.refreshSession"
CREATE = "com.atproto.server.createSession"
THREADS = 32
ROUNDS = 5

CHILD = """
import time, atnb
started = time.perf_counter()
session = atnb.{call}
session.query("com.atproto.server.getSession")
print(round((time.perf_counter() - started) * 1000, 1))
"""


def storm(net, account, *, reactive: bool) -> tuple[dict, float]:
    clock = (lambda: time.time() - 3 * 3600) if reactive else None
    session = atnb.login(
        account.handle, account.app_password, service=net.pds_url, clock=clock
    )
    expired = net.mint_access_jwt(
        session.did, exp=time.time() - 60, scope="com.atproto.appPass"
    )
    session._set_tokens(expired, session._refresh_jwt)
    net.front.reset()

    barrier = threading.Barrier(THREADS + 1)
    failures: list[Exception] = []

    def work() -> None:
        barrier.wait()
        try:
            session.query(GET_SESSION)
        except Exception as exc:  # counted in the table
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started

    counts = net.front.counts()
    counts["failures"] = len(failures)
    session.logout()
    return counts, wall


def resume_round_trips(net, account, env: dict, *, expired: bool, call: str):
    store = store_mod.get_store("file")
    session = atnb.login(account.handle, account.app_password, service=net.pds_url)
    if expired:
        minted = net.mint_access_jwt(
            session.did, exp=time.time() - 60, scope="com.atproto.appPass"
        )
        session._set_tokens(minted, session._refresh_jwt)
        store.save(session.did, session._entry())
    net.front.reset()

    code = CHILD.format(call=call)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    counts = net.front.counts()
    extra = sum(counts.values()) - counts.get(GET_SESSION, 0)
    session.logout()
    return extra, counts, float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attach", action="store_true", help="use a running devnet")
    args = parser.parse_args()

    net = Devnet.attach() if args.attach else Devnet().start()
    folder = tempfile.mkdtemp(prefix="atnb-bench-")
    try:
        atnb.settings.plc_url = net.plc_url
        atnb.settings.entryway = net.pds_url
        atnb.settings.store = "file"
        atnb.settings.store_path = Path(folder) / "store"
        account = net.create_account(app_password=True)
        net.front.reset()

        print(f"refresh storm: {THREADS} threads, expired access JWT, {ROUNDS} rounds")
        print(
            f"{'mode':<11}{'refreshSession':>16}{'getSession':>12}"
            f"{'failures':>10}{'wall ms (median)':>18}"
        )
        for reactive in (False, True):
            rows = [storm(net, account, reactive=reactive) for _ in range(ROUNDS)]
            refreshes = sorted({c.get(REFRESH, 0) for c, _ in rows})
            gets = sorted({c.get(GET_SESSION, 0) for c, _ in rows})
            failures = sum(c["failures"] for c, _ in rows)
            wall = statistics.median(w for _, w in rows) * 1000
            mode = "reactive" if reactive else "proactive"
            print(
                f"{mode:<11}{'/'.join(map(str, refreshes)):>16}"
                f"{'/'.join(map(str, gets)):>12}{failures:>10}{wall:>18.0f}"
            )

        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "ATNB_STORE": "file",
            "ATNB_STORE_PATH": str(Path(folder) / "store"),
            "ATNB_PLC_URL": net.plc_url,
            "ATNB_ENTRYWAY": net.pds_url,
        }
        print()
        print("resume in a new process, then one getSession")
        print(f"{'case':<36}{'extra round trips':>18}{'createSession':>15}{'ms':>8}")
        cases = [
            ("resume(), access JWT valid", False, "resume()"),
            ("resume(), access JWT expired", True, "resume()"),
            (
                "login() again, access JWT valid",
                False,
                f"login({account.handle!r}, 'unused', service={net.pds_url!r})",
            ),
        ]
        for label, expired, call in cases:
            extra, counts, ms = resume_round_trips(
                net, account, env, expired=expired, call=call
            )
            print(f"{label:<36}{extra:>18}{counts.get(CREATE, 0):>15}{ms:>8.0f}")
    finally:
        if not args.attach:
            net.stop()
        store_mod._reset()


if __name__ == "__main__":
    main()
