"""`make lab`: JupyterLab on 127.0.0.1 with the seeded devnet behind it.

Starts the devnet (``python -m atnb.devnet up --seed``), points atnb at it
through ATNB_* variables, opens JupyterLab on loopback in notebooks/, and
stops the devnet when JupyterLab exits (Ctrl-C).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    devnet = [sys.executable, "-m", "atnb.devnet"]
    subprocess.run([*devnet, "up", "--seed"], check=True)
    try:
        from atnb.devnet import Devnet

        env = {**os.environ, **Devnet.attach().environment()}
        print("log in with alice.test / alice-devnet-pass (a devnet throwaway login)")
        command = [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--ip=127.0.0.1",
            "--no-browser",
            f"--ServerApp.root_dir={ROOT / 'notebooks'}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        if os.geteuid() == 0:
            command.append("--allow-root")  # a fresh machine or container
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 0
    finally:
        subprocess.run([*devnet, "down"])


if __name__ == "__main__":
    sys.exit(main())
