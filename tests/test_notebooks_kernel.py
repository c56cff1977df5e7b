"""Notebooks executed by nbclient in real kernels, logging in to the devnet.

The kernel gets the devnet through ``ATNB_*`` variables and keeps its session
in a file store in a private folder, so a second kernel run can resume it.
The "user" who fills the login form is a cell that reads the password from
the kernel's environment: the notebook itself never holds it. Every saved
notebook (outputs, widget state, DEBUG logs) is checked for secrets.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parent.parent
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.")

DEBUG_LOGS = """\
import logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, force=True)
"""
FILL_FORM = """\
import os
from atnb.widgets import pending_form
form = pending_form()
form.password.value = os.environ["TEST_FORM_PASSWORD"]
form.button.click()
print(form.status_text)
"""


def execute(cells: list[str], env: dict[str, str], path: Path, **options):
    """Run ``cells`` in a fresh kernel with ``env``; save the notebook to ``path``."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    notebook.metadata["kernelspec"] = {"name": "python3", "language": "python"}
    client = NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        **options,
    )
    client.execute(env=env)
    nbformat.write(notebook, path)
    return notebook


def kernel_env(devnet_env: dict[str, str], tmp_path: Path, **extra: str) -> dict:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ATNB_", "JPY_", "PYTEST_"))
    }
    env.update(devnet_env)
    env.update(
        {
            "ATNB_STORE": "file",
            "ATNB_STORE_PATH": str(tmp_path / "store"),
            "PYTHONPATH": str(REPO),
            "IPYTHONDIR": str(tmp_path / "ipython"),
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        }
    )
    env.update(extra)
    return env


def outputs(notebook, index: int) -> str:
    """The text of one cell's outputs (streams, results, errors)."""
    parts = []
    for output in notebook.cells[index].outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type == "error":
            parts.append("\n".join(output.traceback))
        else:
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def assert_no_secrets(path: Path, *secrets: str) -> None:
    text = path.read_text()
    for secret in secrets:
        assert secret not in text, f"a secret is in {path.name}"
    assert not JWT.search(text), f"a JWT is in {path.name}"


@pytest.mark.devnet
def test_form_login_then_a_second_kernel_resumes(
    devnet, front, account, devnet_env, tmp_path
):
    env = kernel_env(devnet_env, tmp_path, TEST_FORM_PASSWORD=account.app_password)
    first = execute(
        [
            DEBUG_LOGS,
            "%load_ext atnb",
            f"%atlogin {account.handle}",
            FILL_FORM,
            "%atwhoami",
            f"%xrpc com.atproto.repo.describeRepo repo={account.handle} --raw",
        ],
        env,
        tmp_path / "first.ipynb",
        store_widget_state=True,
    )
    assert "Logged in as" in outputs(first, 3)
    assert "POST com.atproto.server.createSession -> 200" in outputs(first, 3)
    assert f"@{account.handle} ({account.did})" in outputs(first, 4)
    assert account.did in outputs(first, 5)
    widgets = first.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]
    passwords = [
        model["state"].get("value")
        for model in widgets["state"].values()
        if model["model_name"] == "PasswordModel"
    ]
    assert passwords == [""]

    second = execute(
        [DEBUG_LOGS, "%load_ext atnb", f"%atlogin {account.handle}", "%atwhoami"],
        env,
        tmp_path / "second.ipynb",
        store_widget_state=True,
    )
    assert "resumed; no new login" in outputs(second, 2)
    assert "atnb login form" not in outputs(second, 2)
    assert f"@{account.handle}" in outputs(second, 3)
    assert front.count("com.atproto.server.createSession") == 1

    for name in ("first.ipynb", "second.ipynb"):
        assert_no_secrets(tmp_path / name, account.app_password, account.password)


@pytest.mark.devnet
def test_environment_login_for_scheduled_runs(
    devnet, front, account, devnet_env, tmp_path
):
    env = kernel_env(
        devnet_env,
        tmp_path,
        ATNB_IDENTIFIER=account.handle,
        ATNB_PASSWORD=account.app_password,
    )
    cells = [DEBUG_LOGS, "%load_ext atnb", "%atlogin", "%atwhoami"]
    for name in ("run1.ipynb", "run2.ipynb"):
        notebook = execute(cells, env, tmp_path / name)
        assert f"@{account.handle}" in outputs(notebook, 3)
        assert_no_secrets(tmp_path / name, account.app_password)
    assert "resumed" in outputs(notebook, 2)
    assert front.count("com.atproto.server.createSession") == 1


@pytest.mark.devnet
def test_calls_while_the_form_waits_say_finish_it(
    devnet, front, account, devnet_env, tmp_path
):
    env = kernel_env(devnet_env, tmp_path)
    notebook = execute(
        [
            "%load_ext atnb",
            f"%atlogin {account.handle}",
            f"%xrpc com.atproto.repo.describeRepo repo={account.handle} --raw",
            "import atnb\natnb.frame('com.atproto.repo.listRecords', repo='x.test')",
            "%atlogin --prompt",
        ],
        env,
        tmp_path / "pending.ipynb",
        allow_errors=True,
    )
    assert "atnb login form" in outputs(notebook, 1)
    for index in (2, 3):
        (error,) = notebook.cells[index].outputs
        assert error.ename in ("LoginPendingError",)
        assert error.traceback == [
            "LoginPendingError: A login form is waiting for you. "
            "Finish the login form above, then run this again."
        ]
    (error,) = notebook.cells[4].outputs
    assert error.traceback[0].startswith("AtnbError: This frontend cannot ask")
    assert front.count("com.atproto.server.createSession") == 0


def test_load_ext_in_a_kernel_is_cheap(tmp_path):
    cells = [
        "import sys\n%load_ext atnb\n"
        "print(sorted(m for m in ('requests', 'pandas', 'ipywidgets', 'keyring')"
        " if m in sys.modules))"
    ]
    env = kernel_env({}, tmp_path)
    notebook = execute(cells, env, tmp_path / "load.ipynb")
    loaded = json.loads(outputs(notebook, 0).replace("'", '"'))
    assert "requests" not in loaded and "pandas" not in loaded


@pytest.mark.devnet
@pytest.mark.timeout(240)
def test_devnet_saved_notebook_after_wrong_code_and_reload_holds_no_secret(
    devnet, front, make_account, devnet_env, tmp_path
):
    import nbformat
    from nbclient import NotebookClient

    from tests.test_magics_devnet import new_code

    wrong_code = "ZZZZZ-00000"

    person = make_account()
    devnet.enable_email_2fa(person)
    seen = len(devnet.mails(person.email))
    code_file = tmp_path / "code.txt"
    env = kernel_env(
        devnet_env,
        tmp_path,
        TEST_FORM_PASSWORD=person.password,
        TEST_CODE_FILE=str(code_file),
    )
    fill = (
        "import os\nfrom atnb.widgets import pending_form\nform = pending_form()\n"
        "form.{field}.value = {value}\nform.button.click()\nprint(form.status_text)"
    )
    cells = [
        DEBUG_LOGS,
        "%load_ext atnb\n%unload_ext atnb\n%load_ext atnb",
        f"%atlogin {person.handle}",
        fill.format(field="password", value='os.environ["TEST_FORM_PASSWORD"]'),
        fill.format(field="code", value=repr(wrong_code)),
        fill.format(field="code", value='open(os.environ["TEST_CODE_FILE"]).read()'),
        "%atwhoami",
    ]
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    notebook.metadata["kernelspec"] = {"name": "python3", "language": "python"}
    client = NotebookClient(
        notebook, timeout=120, kernel_name="python3", store_widget_state=True
    )
    with client.setup_kernel(env=env):
        for index, cell in enumerate(notebook.cells):
            if index == 5:
                code_file.write_text(new_code(devnet, person.email, seen))
            client.execute_cell(cell, index)
        client.set_widgets_metadata()
    path = tmp_path / "2fa.ipynb"
    nbformat.write(notebook, path)

    text = json.dumps([c.outputs for c in notebook.cells])
    assert "That sign-in code was not accepted" in text
    assert f"@{person.handle} ({person.did})" in text
    assert "createSession" in text  # the DEBUG log lines are in the outputs
    assert "application/vnd.jupyter.widget-state+json" in notebook.metadata["widgets"]
    assert_no_secrets(path, person.password, code_file.read_text())
    assert front.count("com.atproto.server.createSession") == 3
