"""The login form in a real JupyterLab, driven by Playwright and Debian's Chromium.

The first test needs no network: the form calls a stub login inside the
kernel, which proves the front end (fields, the code field appearing, the
secrets cleared in the page, the form replaced by the status, what a save
writes). The devnet tests run ``%atlogin`` and log in for real, with an app
password and with the main password of an account with email 2FA.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import pytest

from tests.jupyter_fixtures import open_notebook, run_cell, save_notebook
from tests.test_magics_devnet import new_code

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.")

STUB_CELL = """\
import hashlib
from types import SimpleNamespace
from atnb.errors import AuthFactorTokenRequired
from atnb.widgets import LoginForm

seen = []

def stub_login(identifier, password, *, auth_factor_token=None, **kwargs):
    code = auth_factor_token
    digest = code and hashlib.sha256(code.encode()).hexdigest()[:12]
    seen.append((identifier, len(password), digest))
    if auth_factor_token is None:
        raise AuthFactorTokenRequired("A sign in code has been sent", status=401)
    return SimpleNamespace(handle=identifier, did="did:plc:stub",
                           pds_url="http://127.0.0.1:9", access_expires_at=None)

form = LoginForm("alice.test", login=stub_login)
form
"""


@pytest.fixture(autouse=True, scope="module")
def _expect_timeout():
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)


def wait_for_saved(path: Path, predicate, timeout: float = 20.0) -> dict:
    """Read the notebook from disk until ``predicate(notebook)`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            notebook = json.loads(path.read_text())
            if predicate(notebook):
                return notebook
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} was not saved as expected")
        time.sleep(0.2)


def assert_no_secrets(text: str, *secrets: str) -> None:
    for secret in secrets:
        where = text.find(secret)
        assert where < 0, f"a secret was saved: ...{text[max(0, where - 200) : where]}"
    assert not JWT.search(text), "a JWT was saved"


def test_form_in_jupyterlab_with_a_stub_login(lab, page, output_dir):
    from playwright.sync_api import expect

    password, code = "stub-password-1234", "STUBC-0DE42"
    path = lab.write_notebook("stub.ipynb", [STUB_CELL, "seen"])
    nb = open_notebook(page, lab, "stub.ipynb")
    run_cell(page, 0)

    expect(nb.locator(".atnb-identifier input")).to_have_value("alice.test")
    expect(nb.get_by_text("An app password is recommended")).to_be_visible()
    expect(nb.locator(".atnb-code")).to_be_hidden()
    nb.locator(".atnb-password input").fill(password)
    nb.locator(".atnb-login").click()

    expect(nb.locator(".atnb-code input")).to_be_visible()
    expect(nb.locator(".atnb-password input")).to_have_value("")
    expect(nb.locator(".atnb-status")).to_contain_text("sign-in code")
    page.screenshot(path=str(output_dir / "form-code-step.png"))

    nb.locator(".atnb-code input").fill(code)
    nb.locator(".atnb-login").click()
    expect(nb.locator(".atnb-status")).to_contain_text("Logged in as @alice.test")
    expect(nb.locator(".atnb-password")).to_have_count(0)
    page.screenshot(path=str(output_dir / "form-done.png"))

    run_cell(page, 1)
    digest = hashlib.sha256(code.encode()).hexdigest()[:12]
    expect(nb.locator(".jp-OutputArea-output").last).to_contain_text(
        f"('alice.test', {len(password)}, '{digest}')"
    )
    save_notebook(page)
    notebook = wait_for_saved(path, lambda nb: nb["cells"][1].get("outputs"))
    assert "widgets" not in notebook["metadata"]  # JupyterLab's default
    assert_no_secrets(json.dumps(notebook), password, code)
    log = (lab.folder / "server.log").read_text(errors="replace")
    assert_no_secrets(log, password, code)


def login_notebook(devnet_lab, name: str, handle: str) -> Path:
    return devnet_lab.write_notebook(
        name,
        [
            "%load_ext atnb",
            f"%atlogin {handle}",
            f"%xrpc com.atproto.repo.describeRepo repo={handle} --raw",
        ],
    )


@pytest.mark.devnet
def test_atlogin_form_logs_in_to_the_devnet(devnet_lab, devnet, page, output_dir):
    from playwright.sync_api import expect

    account = devnet.create_account(app_password=True)
    path = login_notebook(devnet_lab, "app-password.ipynb", account.handle)
    nb = open_notebook(page, devnet_lab, path.name)
    run_cell(page, 0)
    run_cell(page, 1)

    expect(nb.locator(".atnb-identifier input")).to_have_value(account.handle)
    nb.locator(".atnb-password input").fill("not-the-password")
    nb.locator(".atnb-login").click()
    expect(nb.locator(".atnb-status")).to_contain_text("Wrong identifier or password")
    expect(nb.locator(".atnb-code")).to_be_hidden()

    nb.locator(".atnb-password input").fill(account.app_password)
    page.screenshot(path=str(output_dir / "form.png"))
    nb.locator(".atnb-login").click()
    status = nb.locator(".atnb-status")
    expect(status).to_contain_text(f"Logged in as @{account.handle} ({account.did})")
    expect(status).to_contain_text(devnet.pds_url)
    page.screenshot(path=str(output_dir / "logged-in.png"))

    run_cell(page, 2)
    expect(nb.locator(".jp-OutputArea-output").last).to_contain_text(account.did)
    save_notebook(page)
    notebook = wait_for_saved(path, lambda nb: "widgets" in nb.get("metadata", {}))
    assert_no_secrets(json.dumps(notebook), account.app_password, "not-the-password")
    log = (devnet_lab.folder / "server.log").read_text(errors="replace")
    assert_no_secrets(log, account.app_password, "not-the-password")


@pytest.mark.devnet
def test_atlogin_form_with_an_emailed_code(
    devnet_lab, devnet, seeded, page, output_dir
):
    from playwright.sync_api import expect

    from atnb.devnet.seed import password_for

    person = seeded["accounts"][seeded["two_factor"]]
    password = password_for(seeded["two_factor"])
    devnet.front.configure(two_factor=True)
    path = login_notebook(devnet_lab, "two-factor.ipynb", person.handle)
    nb = open_notebook(page, devnet_lab, path.name)
    run_cell(page, 0)
    run_cell(page, 1)

    seen = len(devnet.mails(person.email))
    nb.locator(".atnb-password input").fill(password)
    nb.locator(".atnb-login").click()
    code_field = nb.locator(".atnb-code input")
    expect(code_field).to_be_visible()
    expect(nb.locator(".atnb-password input")).to_have_value("")
    code = new_code(devnet, person.email, seen)

    # A mistyped code first: the form says so, clears it, and stays usable.
    code_field.fill("ZZZZZ-00000")
    nb.locator(".atnb-login").click()
    expect(nb.locator(".atnb-status")).to_contain_text("was not accepted")
    expect(code_field).to_have_value("")
    expect(code_field).to_be_visible()

    code_field.fill(code)
    page.screenshot(path=str(output_dir / "form-with-code.png"))
    nb.locator(".atnb-login").click()

    expect(nb.locator(".atnb-status")).to_contain_text(f"Logged in as @{person.handle}")
    page.screenshot(path=str(output_dir / "logged-in.png"))
    run_cell(page, 2)
    expect(nb.locator(".jp-OutputArea-output").last).to_contain_text(person.did)
    save_notebook(page)
    notebook = wait_for_saved(path, lambda nb: "widgets" in nb.get("metadata", {}))
    assert_no_secrets(json.dumps(notebook), password, code)
    log = (devnet_lab.folder / "server.log").read_text(errors="replace")
    assert_no_secrets(log, password, code)
