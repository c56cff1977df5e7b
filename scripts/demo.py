"""`make demo`: start the devnet, seed it, run the quickstart notebook headless.

The notebook logs in non-interactively from ATNB_IDENTIFIER / ATNB_PASSWORD /
ATNB_SERVICE (a seeded account's app password on the devnet), pulls real data
and plots it. The executed notebook and an HTML copy are written to the build
folder, named at the end. Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ["quickstart.ipynb", "sessions.ipynb"]


def devnet_env(net, seeded) -> dict[str, str]:
    alice = seeded["accounts"]["alice"]
    return {
        **net.environment(),
        "ATNB_IDENTIFIER": alice.handle,
        "ATNB_PASSWORD": alice.app_password,
    }


def run_notebook(source: Path, target: Path, env: dict[str, str]) -> None:
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    notebook = nbformat.read(source, as_version=4)
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        NotebookClient(
            notebook,
            timeout=300,
            kernel_name="python3",
            resources={"metadata": {"path": str(source.parent)}},
            store_widget_state=False,
        ).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    nbformat.write(notebook, target)
    html, _ = HTMLExporter().from_notebook_node(notebook)
    target.with_suffix(".html").write_text(html)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--build", default="build")
    args = parser.parse_args()
    build = (ROOT / args.build).resolve()
    build.mkdir(parents=True, exist_ok=True)

    from atnb.devnet import Devnet
    from atnb.devnet.seed import seed

    started = time.monotonic()
    with Devnet(two_factor=True) as net:
        print(f"devnet up in {time.monotonic() - started:.1f} s: PDS {net.pds_url}")
        seeded = seed(net)
        print(f"seeded {seeded['posts']} posts for {len(seeded['accounts'])} accounts")
        env = devnet_env(net, seeded)
        with tempfile.TemporaryDirectory() as store:
            env["ATNB_STORE"] = "file"
            env["ATNB_STORE_PATH"] = store
            outputs = []
            for name in NOTEBOOKS:
                source = ROOT / "notebooks" / name
                if not source.exists():
                    continue
                target = build / name
                print(f"running {source.relative_to(ROOT)} ...", flush=True)
                run_notebook(source, target, env)
                outputs.append(target)
    for target in outputs:
        print(f"executed notebook: {target}")
        print(f"HTML copy:         {target.with_suffix('.html')}")
    return 0 if outputs else 1


if __name__ == "__main__":
    sys.exit(main())
