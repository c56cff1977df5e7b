"""A real JupyterLab on 127.0.0.1 and a headless Debian Chromium, for browser tests.

Registered by tests/conftest_jupyter.py. Fixtures:

    lab          (session) JupyterLab with kernels pointed at dead loopback
                 ports (no network at all); widget state not saved (the
                 JupyterLab default)
    devnet_lab   (session) kernels pointed at the devnet (ATNB_* variables,
                 a file store in a private folder); widget state saved on
                 save ("Save Widget State Automatically" on)
    browser      (session) a Chromium context from /usr/bin/chromium (never
                 ``playwright install``) with a fresh profile folder and
                 flags that keep it from dialling out
    page         (function) a fresh page; a screenshot on failure

Each server gets its own root, config, runtime, settings and workspaces
folders; it is stopped with ``POST /api/shutdown`` and waited for.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
DEAD_HTTP = "http://127.0.0.1:9"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
KERNEL_IDLE = "Python 3 (ipykernel) | Idle"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class JupyterLab:
    """One JupyterLab server process; ``url`` carries no token."""

    folder: Path
    env: dict[str, str] = field(default_factory=dict)
    save_widget_state: bool = True
    port: int = 0
    token: str = ""
    process: subprocess.Popen | None = None

    @property
    def root(self) -> Path:
        return self.folder / "root"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> JupyterLab:
        self.port, self.token = _free_port(), secrets.token_hex(16)
        dirs = {
            name: self.folder / name
            for name in ("root", "config", "runtime", "settings", "workspaces", "data")
        }
        for path in dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        self._write_settings(dirs["settings"])

        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(dirs["config"]),
            "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
            "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]),
            "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]),
            "IPYTHONDIR": str(dirs["data"] / "ipython"),
            "PYTHONPATH": str(REPO),
            **self.env,
        }
        env.pop("JUPYTER_TOKEN", None)
        command = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={dirs['root']}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        log = (self.folder / "server.log").open("wb")
        self.process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited; see {self.folder}/server.log")
            try:
                self.api("GET", "/api/status")
                return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"JupyterLab did not start; see {self.folder}/server.log")

    def _write_settings(self, settings: Path) -> None:
        files = {
            "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
                "fetchNews": "false",
                "checkForUpdates": False,
            },
            "@jupyter-widgets/jupyterlab-manager/plugin.jupyterlab-settings": {
                "saveState": self.save_widget_state,
            },
        }
        for name, value in files.items():
            path = settings / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value))

    def api(self, method: str, path: str, body: object = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text else None

    def notebook_url(self, name: str) -> str:
        # ``reset`` opens a clean workspace: only this notebook, no old tabs.
        return f"{self.url}/lab/tree/{name}?reset&token={self.token}"

    def write_notebook(self, name: str, cells: list[str]) -> Path:
        import nbformat

        notebook = nbformat.v4.new_notebook()
        notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
        notebook.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3 (ipykernel)",
            "language": "python",
        }
        path = self.root / name
        nbformat.write(notebook, path)
        return path

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(OSError):
            self.api("POST", "/api/shutdown")
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


def dead_env(store_path: Path) -> dict[str, str]:
    """Kernel settings where every public default is a dead loopback port."""
    return {
        "ATNB_PLC_URL": DEAD_HTTP,
        "ATNB_ENTRYWAY": DEAD_HTTP,
        "ATNB_PUBLIC_APPVIEW": DEAD_HTTP,
        "ATNB_NAMESERVERS": "127.0.0.1:9",
        "ATNB_STORE": "file",
        "ATNB_STORE_PATH": str(store_path),
    }


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLab]:
    """JupyterLab whose kernels cannot reach any service."""
    folder = tmp_path_factory.mktemp("lab")
    env = dead_env(folder / "store")
    server = JupyterLab(folder, env=env, save_widget_state=False).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def devnet_lab(
    devnet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JupyterLab]:
    """JupyterLab whose kernels log in to the devnet (and nothing else)."""
    folder = tmp_path_factory.mktemp("devnet-lab")
    env = {
        **dead_env(folder / "store"),
        "ATNB_PLC_URL": devnet.plc_url,
        "ATNB_ENTRYWAY": devnet.pds_url,
        "ATNB_PUBLIC_APPVIEW": devnet.appview_url,
        "ATNB_SERVICE": devnet.pds_url,
    }
    server = JupyterLab(folder, env=env).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory):
    """Headless Debian Chromium driven by Playwright."""
    if not Path(CHROMIUM).exists():
        pytest.skip("no /usr/bin/chromium: apt-get install -y chromium")
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),  # a fresh --user-data-dir
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        yield context
        context.close()


@pytest.fixture
def output_dir(request: pytest.FixtureRequest) -> Path:
    """test-output/<test name>/ in the repository (git-ignored)."""
    name = request.node.name.replace("/", "_").replace("[", "-").rstrip("]")
    path = REPO / "test-output" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture
def page(browser, output_dir: Path, request: pytest.FixtureRequest):
    """A fresh browser page; its screenshot lands in ``output_dir`` on failure."""
    page = browser.new_page()
    yield page
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        page.screenshot(path=str(output_dir / "failure.png"))
    page.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def open_notebook(page, lab: JupyterLab, name: str, timeout: float = 60_000):
    """Open a notebook, wait until its kernel is connected and idle.

    Returns the locator of the notebook's panel; scope selectors to it.
    """
    page.goto(lab.notebook_url(name))
    page.get_by_role("button", name=KERNEL_IDLE).wait_for(timeout=timeout)
    return notebook_panel(page)


def notebook_panel(page):
    """The notebook panel on show (other tabs stay in the page, hidden)."""
    return page.locator(".jp-NotebookPanel:visible")


def run_cell(page, index: int) -> None:
    """Run the cell at ``index`` in place (click its editor, Control+Enter)."""
    cell = notebook_panel(page).locator(".jp-Cell").nth(index)
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Control+Enter")


def save_notebook(page) -> None:
    page.keyboard.press("Control+s")
