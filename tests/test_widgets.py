"""The login form, driven from Python (no kernel, no network).

The browser test (tests/test_browser.py) proves the front end; the devnet
tests in tests/test_magics.py log in for real. Here ``login`` is a stub so
every branch of the form runs in milliseconds.
"""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace

import pytest

from atnb import widgets
from atnb.errors import (
    AuthenticationError,
    AuthFactorTokenRequired,
    InvalidHandleError,
    NetworkError,
    RateLimitError,
    SessionExpiredError,
)

PASSWORD = "hunter2-main-password"
CODE = "ABCDE-12345"
WRONG_CODE = "ZZZZZ-00000"
SESSION = SimpleNamespace(
    handle="alice.test",
    did="did:plc:aaaa",
    pds_url="http://127.0.0.1:2583",
    access_expires_at=dt.datetime(2026, 12, 4, 18, 30, tzinfo=dt.timezone.utc),
)


class StubLogin:
    """Answers each call with the next outcome; records what the form sent."""

    def __init__(self, form_ref: list, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[dict] = []
        self.form_ref = form_ref

    def __call__(self, identifier, password, **kwargs):
        form = self.form_ref[0]
        # The secrets are gone from the widgets before the request goes out.
        self.calls.append(
            {
                "identifier": identifier,
                "password": password,
                **kwargs,
                "password_widget": form.password.value,
                "code_widget": form.code.value,
            }
        )
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def make_form(*outcomes: object, **kwargs) -> tuple[widgets.LoginForm, StubLogin]:
    ref: list = []
    stub = StubLogin(ref, *outcomes)
    form = widgets.LoginForm(login=stub, **kwargs)
    ref.append(form)
    return form, stub


def all_widget_state() -> str:
    import ipywidgets

    return json.dumps(ipywidgets.Widget.get_manager_state(drop_defaults=False))


@pytest.fixture(autouse=True)
def _no_waiting_forms():
    yield
    for form in list(widgets._waiting):
        form.close()


def test_layout_has_the_fields_and_classes():
    form, _ = make_form()

    classes = {tuple(w._dom_classes) for w in form.box.children}
    for name in ("identifier", "password", "note", "code", "login", "status"):
        assert (f"atnb-{name}",) in classes
    assert form.code.layout.display == "none"
    assert "An app password is recommended" in form.note.value
    assert form.button.description == "Log in"
    assert form.password.__class__.__name__ == "Password"


def test_success_clears_the_password_and_replaces_the_form():
    seen = []
    form, stub = make_form(SESSION, identifier="alice.test", on_login=seen.append)
    form.password.value = PASSWORD

    assert widgets.pending_form() is form
    form.button.click()

    call = stub.calls[0]
    assert call["password"] == PASSWORD
    assert call["password_widget"] == ""
    assert call["auth_factor_token"] is None
    assert form.box.children == (form.status,)
    text = form.status_text
    for part in ("@alice.test", "did:plc:aaaa", "http://127.0.0.1:2583", "2026-12-04"):
        assert part in text
    assert seen == [SESSION]
    assert form.session is SESSION
    assert widgets.pending_form() is None
    assert PASSWORD not in all_widget_state()


def test_sign_in_code_field_appears_only_when_asked():
    ask = AuthFactorTokenRequired("A sign in code has been sent", status=401)
    form, stub = make_form(ask, SESSION, identifier="alice.test")
    form.password.value = PASSWORD
    form.button.click()

    assert form.code_requested
    assert form.code.layout.display != "none"
    assert "sign-in code" in form.status_text
    assert form.password.value == ""
    assert form.waiting

    form.code.value = f" {CODE} "
    form.button.click()
    second = stub.calls[1]
    assert second["auth_factor_token"] == CODE
    assert second["password"] == PASSWORD  # held in memory, not in a widget
    assert second["code_widget"] == ""
    assert form.session is SESSION
    state = all_widget_state()
    assert PASSWORD not in state and CODE not in state
    assert form._held_password is None


def test_code_step_asks_for_the_code_before_calling():
    ask = AuthFactorTokenRequired("code sent", status=400)
    form, stub = make_form(ask, identifier="alice.test")
    form.password.value = PASSWORD
    form.button.click()
    form.button.click()

    assert len(stub.calls) == 1
    assert "Enter the sign-in code" in form.status_text
    assert form._held_password == PASSWORD


def test_plain_wrong_password_offers_no_code_field():
    wrong = AuthenticationError("Invalid identifier or password", status=401)
    form, _ = make_form(wrong, SESSION, identifier="alice.test")
    form.password.value = PASSWORD
    form.button.click()

    assert not form.code_requested
    assert form.status_text == (
        "Wrong identifier or password. An app password is recommended."
    )
    assert not form.button.disabled
    assert form.box.children[0] is form.identifier  # still usable

    form.password.value = "right"
    form.button.click()
    assert form.session is SESSION


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (InvalidHandleError("'alice' is not a valid handle"), "not a valid handle"),
        (NetworkError("connection refused"), "connection refused"),
        (
            RateLimitError(
                "Rate Limit Exceeded",
                status=429,
                error="RateLimitExceeded",
                nsid="com.atproto.server.createSession",
                headers={"ratelimit-reset": "1726684000"},
            ),
            "2024-09-18 18:26:40 UTC",
        ),
    ],
)
def test_errors_are_one_line_and_the_form_stays(error, expected):
    form, _ = make_form(error, identifier="alice.test")
    form.password.value = PASSWORD
    form.button.click()

    assert expected in form.status_text
    assert "\n" not in form.status_text
    assert form.waiting and not form.button.disabled
    assert PASSWORD not in form.status.value


def test_unexpected_errors_do_not_echo_their_text():
    form, _ = make_form(RuntimeError(f"boom {PASSWORD}"), identifier="alice.test")
    form.password.value = PASSWORD
    form.button.click()

    assert "RuntimeError" in form.status_text
    assert PASSWORD not in form.status_text


def test_missing_fields_are_asked_for_without_a_request():
    form, stub = make_form()
    form.button.click()
    assert "Enter your handle" in form.status_text

    form.identifier.value = "alice.test"
    form.button.click()
    assert "Enter your password" in form.status_text
    assert "app password is recommended" in form.status_text
    assert stub.calls == []


def test_plain_text_repr_names_the_fallback_and_no_secret():
    form, _ = make_form(identifier="alice.test")
    form.password.value = PASSWORD

    bundle = form._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "%atlogin --prompt" in bundle["text/plain"]
    assert PASSWORD not in repr(form)
    assert PASSWORD not in str(bundle)


def test_close_stops_waiting_and_shows_the_message():
    form, _ = make_form(identifier="alice.test")
    form.close("Replaced by a newer login form.")

    assert widgets.pending_form() is None
    assert form.status_text == "Replaced by a newer login form."
    assert form.box.children == (form.status,)


def test_login_widget_is_public_and_lazy():
    import atnb

    assert atnb.login_widget is widgets.login_widget


def test_login_widget_passes_service_and_store(monkeypatch):
    form = widgets.login_widget(
        "bob.test", service="http://127.0.0.1:1", store="memory"
    )
    assert form.identifier.value == "bob.test"
    assert (form.service, form.store) == ("http://127.0.0.1:1", "memory")


def test_describe_session_formats_epoch_and_unknown_expiry():
    line = widgets.describe_session(
        SimpleNamespace(
            handle="a.test", did="did:plc:x", pds_url="u", access_expires_at=0
        )
    )
    assert "1970-01-01 00:00 UTC" in line
    missing = SimpleNamespace(handle="a.test", did="did:plc:x", pds_url="u")
    assert "unknown" in widgets.describe_session(missing)


# -- holes found by tests/test_surface_breakage.py ------------------------------


def test_a_closed_form_keeps_no_password_and_logs_in_nobody():
    # Hole: close() without a message left the typed password in the widget
    # (and in the saved widget state); its button still read nothing out.
    form, stub = make_form(SESSION)
    form.password.value = PASSWORD
    form.close()
    assert form.password.value == "" and form.button.disabled

    form.password.value = PASSWORD
    form.code.value = CODE
    form.submit()
    assert form.password.value == "" and form.code.value == ""
    assert stub.calls == [] and form.session is None
    assert PASSWORD not in all_widget_state() and CODE not in all_widget_state()


def test_a_wrong_code_says_so_and_the_right_one_logs_in():
    form, stub = make_form(
        AuthFactorTokenRequired("A sign in code has been sent", status=401),
        AuthFactorTokenRequired("Invalid sign in code", status=401),
        SESSION,
    )
    form.identifier.value = "alice.test"
    form.password.value = PASSWORD
    form.submit()
    assert form.code_requested and "sent a sign-in code" in form.status_text

    form.code.value = WRONG_CODE
    form.submit()
    assert form.status_text.startswith("That sign-in code was not accepted")
    assert form.code.value == "" and form.password.value == ""

    form.code.value = CODE
    assert form.submit() is SESSION
    assert [c["auth_factor_token"] for c in stub.calls] == [None, WRONG_CODE, CODE]
    assert {c["password"] for c in stub.calls} == {PASSWORD}
    assert not [s for s in (PASSWORD, CODE, WRONG_CODE) if s in all_widget_state()]


def test_a_held_password_is_not_sent_for_another_identifier():
    # Hole: after the code step, changing the handle sent the first account's
    # password (held for the code retry) to log in to the second account.
    form, stub = make_form(AuthFactorTokenRequired("code sent", status=401))
    form.identifier.value = "alice.test"
    form.password.value = PASSWORD
    form.submit()
    assert form.code_requested

    form.identifier.value = "bob.test"
    form.code.value = CODE
    form.submit()

    assert len(stub.calls) == 1
    assert not form.code_requested
    assert form.status_text.startswith("Enter your password")


@pytest.mark.parametrize(
    "error",
    [
        NetworkError("connection dropped"),
        SessionExpiredError("ended"),
        RuntimeError(f"boom {PASSWORD}"),
    ],
)
def test_secrets_are_cleared_on_every_failure(error):
    form, stub = make_form(AuthFactorTokenRequired("code", status=401), error)
    form.identifier.value = "alice.test"
    form.password.value = PASSWORD
    form.submit()
    form.code.value = CODE
    form.submit()
    assert stub.calls[1]["password_widget"] == "" == stub.calls[1]["code_widget"]
    assert form.password.value == "" and form.code.value == ""
    assert form._held_password is None
    shown = form.status_text + repr(form) + all_widget_state()
    assert PASSWORD not in shown and CODE not in shown
    for widget in (form.identifier, form.password, form.code, form.button):
        assert PASSWORD not in widget.description + getattr(widget, "placeholder", "")


def test_describe_session_names_no_token():
    session = SimpleNamespace(**vars(SESSION))
    session.access_jwt = "eyJsecret.eyJsecret.sig"
    line = widgets.describe_session(session)
    assert "eyJ" not in line
    assert line.endswith(
        dt.datetime(2026, 12, 4, 18, 30).strftime("%Y-%m-%d %H:%M UTC.")
    )
