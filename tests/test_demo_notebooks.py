"""The committed notebooks run against the devnet, hold their results, and no secret."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.devnet

ROOT = Path(__file__).resolve().parent.parent
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")


def _demo():
    spec = importlib.util.spec_from_file_location("atnb_demo", ROOT / "scripts/demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["quickstart.ipynb", "sessions.ipynb"])
def test_committed_notebook_has_no_outputs(name):
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    assert "widgets" not in notebook.metadata
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == []
            assert cell.execution_count is None


@pytest.fixture(scope="module")
def executed(devnet, seeded, tmp_path_factory):
    demo = _demo()
    folder = tmp_path_factory.mktemp("notebooks")
    env = demo.devnet_env(devnet, seeded)
    env.update(ATNB_STORE="file", ATNB_STORE_PATH=str(folder / "store"))
    secrets = [seeded["accounts"]["alice"].app_password]
    results = {}
    for name in ("quickstart.ipynb", "sessions.ipynb"):
        target = folder / name
        demo.run_notebook(ROOT / "notebooks" / name, target, env)
        results[name] = target
    return results, secrets


def test_quickstart_holds_frames_and_plot(executed):
    results, _ = executed
    notebook = nbformat.read(results["quickstart.ipynb"], as_version=4)
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = json.dumps(outputs)
    assert "feed items" in text
    assert "post.record.text" in text  # the feed DataFrame
    assert "bob.test" in text  # the follower list
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the plot
    assert "Hello from atnb" in text  # the post written and read back


def test_sessions_notebook_runs(executed):
    results, _ = executed
    notebook = nbformat.read(results["sessions.ipynb"], as_version=4)
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = json.dumps(outputs)
    assert "revoke confirmed by the server: True" in text
    assert "('update', 'alice.test')" in text


def test_executed_notebooks_hold_no_secret(executed):
    results, secrets = executed
    for path in results.values():
        raw = path.read_text()
        assert not JWT.search(raw)
        for secret in secrets:
            assert secret not in raw
        html = path.with_suffix(".html").read_text()
        assert not JWT.search(html)
        assert "application/vnd.jupyter.widget-state+json" not in raw
