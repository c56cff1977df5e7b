"""How long ``import atnb`` and ``%load_ext atnb`` take, next to ``import atproto``.

Each measurement runs in a fresh Python process, timed inside the process
with ``time.perf_counter`` around the one statement (interpreter start-up is
not counted), and the median of several runs is reported. The goal is that
atnb costs at most 1/8 of ``import atproto`` (the MarshalX SDK), for both.

    .venv/bin/python benchmarks/bench_import.py [--runs 7] [--json]

``%load_ext atnb`` is timed in a process where an IPython shell already
exists, as in a notebook: only the extension's own cost is counted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOAL = 1 / 8

TIMED_IMPORT = """
import time
t0 = time.perf_counter()
import {module}
print(time.perf_counter() - t0)
"""

TIMED_LOAD_EXT = """
import time
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
t0 = time.perf_counter()
shell.run_line_magic("load_ext", "atnb")
print(time.perf_counter() - t0)
"""

CASES = {
    "import atnb": TIMED_IMPORT.format(module="atnb"),
    "%load_ext atnb": TIMED_LOAD_EXT,
    "import atproto": TIMED_IMPORT.format(module="atproto"),
}


def measure(source: str) -> float:
    """Seconds the timed statement took in one fresh process."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "0"}
    out = subprocess.run(
        [sys.executable, "-c", source],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env=env,
    )
    return float(out.stdout.strip().splitlines()[-1])


def run(runs: int) -> dict[str, dict[str, float]]:
    """Median and spread (seconds) of each case; the cases take turns."""
    for source in CASES.values():
        measure(source)  # warm the bytecode caches once
    samples: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(runs):
        for name, source in CASES.items():
            samples[name].append(measure(source))
    return {
        name: {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "runs": len(values),
        }
        for name, values in samples.items()
    }


def report(results: dict[str, dict[str, float]]) -> list[str]:
    base = results["import atproto"]["median"]
    lines = [f"{'case':<16} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'ratio':>7}"]
    for name, r in results.items():
        ratio = r["median"] / base
        lines.append(
            f"{name:<16} {r['median'] * 1e3:>10.1f} {r['min'] * 1e3:>8.1f} "
            f"{r['max'] * 1e3:>8.1f} {ratio:>7.3f}"
        )
    for name in ("import atnb", "%load_ext atnb"):
        ratio = results[name]["median"] / base
        verdict = "meets" if ratio <= GOAL else "MISSES"
        lines.append(f"{name}: {ratio:.3f} of import atproto, {verdict} the 1/8 goal")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="processes per case")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)

    results = run(args.runs)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("\n".join(report(results)))
    base = results["import atproto"]["median"]
    worst = max(results[n]["median"] for n in ("import atnb", "%load_ext atnb"))
    return 0 if worst <= GOAL * base else 1


if __name__ == "__main__":
    sys.exit(main())
