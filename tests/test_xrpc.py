"""atnb.xrpc: checks before sending, encoding, decoding, errors, redirects."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest
import requests
from requests.adapters import BaseAdapter

from atnb import errors, xrpc


class StubAdapter(BaseAdapter):
    """A requests adapter that answers from a function and records requests."""

    def __init__(self, answer):
        super().__init__()
        self.answer = answer
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request, **kwargs):
        self.requests.append(request)
        status, headers, body = self.answer(request)
        response = requests.Response()
        response.status_code = status
        response.headers.update(headers)
        response._content = (
            body if isinstance(body, bytes) else json.dumps(body).encode()
        )
        response.url = request.url
        response.request = request
        return response

    def close(self):
        pass


def stub_http(answer) -> tuple[requests.Session, StubAdapter]:
    http = xrpc.new_http_session()
    adapter = StubAdapter(answer)
    http.mount("https://", adapter)
    http.mount("http://", adapter)
    return http, adapter


JSON = {"Content-Type": "application/json; charset=utf-8"}


# -- checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    "nsid",
    ["app.bsky.feed.getAuthorFeed", "com.atproto.server.createSession", "a.b.c"],
)
def test_valid_nsids(nsid):
    assert xrpc.check_nsid(nsid) == nsid


@pytest.mark.parametrize(
    "nsid",
    ["", "app.bsky", "app..bsky.x", "app.bsky.feed.get-feed", "1app.bsky.x", None],
)
def test_invalid_nsids_raise(nsid):
    with pytest.raises(errors.InvalidNSIDError):
        xrpc.check_nsid(nsid)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:2583",
        "http://127.0.0.1:2583/",
        "http://127.8.9.10",
        "http://[::1]:2583",
        "https://pds.example.com",
    ],
)
def test_loopback_http_and_https_accepted(url):
    assert xrpc.check_service_url(url, allow_loopback_http=True) == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    ["http://pds.example.com", "http://10.0.0.1", "ftp://x", "localhost:2583", ""],
)
def test_insecure_urls_refused(url):
    with pytest.raises(errors.InsecureServiceError):
        xrpc.check_service_url(url, allow_loopback_http=True)


def test_loopback_http_needs_the_callers_choice():
    with pytest.raises(errors.InsecureServiceError):
        xrpc.check_service_url("http://localhost:2583", allow_loopback_http=False)


def test_http_refused_before_any_byte_is_sent():
    http, adapter = stub_http(lambda r: (200, JSON, {}))
    with pytest.raises(errors.InsecureServiceError):
        xrpc.query(
            "http://pds.example.com", "com.atproto.server.describeServer", http=http
        )
    assert adapter.requests == []


# -- encoding ------------------------------------------------------------------


def test_params_lists_booleans_none_and_datetimes():
    when = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.timezone.utc)
    pairs = xrpc.encode_params(
        {
            "uris": ["at://a", "at://b"],
            "on": True,
            "off": False,
            "gone": None,
            "since": when,
            "limit": 5,
        }
    )
    assert pairs == [
        ("uris", "at://a"),
        ("uris", "at://b"),
        ("on", "true"),
        ("off", "false"),
        ("since", "2026-12-04T12:00:00Z"),
        ("limit", "5"),
    ]


def test_query_sends_repeated_keys_on_the_wire():
    http, adapter = stub_http(lambda r: (200, JSON, {"ok": True}))
    data, headers = xrpc.query(
        "https://pds.example.com",
        "app.bsky.actor.getProfiles",
        {"actors": ["a.test", "b.test"], "x": True},
        http=http,
    )
    assert data == {"ok": True}
    assert headers["content-type"].startswith("application/json")
    url = adapter.requests[0].url
    assert url.endswith(
        "/xrpc/app.bsky.actor.getProfiles?actors=a.test&actors=b.test&x=true"
    )


def test_encode_body_json_bytes_and_files():
    body, headers = xrpc.encode_body({"a": 1})
    assert (
        json.loads(body) == {"a": 1} and headers["Content-Type"] == "application/json"
    )
    body, headers = xrpc.encode_body(b"\x89PNG", {"Content-Type": "image/png"})
    assert body == b"\x89PNG" and headers == {"Content-Type": "image/png"}
    body, headers = xrpc.encode_body(bytearray(b"x"))
    assert headers["Content-Type"] == "application/octet-stream"
    assert xrpc.encode_body(None) == (None, {})


# -- decoding and errors -------------------------------------------------------


def test_non_json_200_is_bytes_and_empty_is_none():
    http, _ = stub_http(
        lambda r: (200, {"Content-Type": "application/vnd.ipld.car"}, b"CAR")
    )
    assert (
        xrpc.query("https://pds.example.com", "com.atproto.sync.getRepo", http=http)[0]
        == b"CAR"
    )
    http, _ = stub_http(lambda r: (200, {}, b""))
    assert xrpc.query("https://pds.example.com", "a.b.c", http=http)[0] is None


def test_json_error_keeps_status_name_message_nsid_headers():
    http, _ = stub_http(
        lambda r: (
            400,
            {**JSON, "X-Trace": "t1"},
            {"error": "InvalidRequest", "message": "bad actor"},
        )
    )
    with pytest.raises(errors.XRPCError) as info:
        xrpc.query("https://pds.example.com", "app.bsky.actor.getProfile", http=http)
    exc = info.value
    assert (exc.status, exc.error, exc.server_message) == (
        400,
        "InvalidRequest",
        "bad actor",
    )
    assert exc.nsid == "app.bsky.actor.getProfile"
    assert exc.headers["X-Trace"] == "t1"


def test_html_error_page_names_the_status():
    page = b"<html><body>502 Bad Gateway</body></html>"
    http, _ = stub_http(lambda r: (502, {"Content-Type": "text/html"}, page))
    with pytest.raises(errors.ServerError) as info:
        xrpc.query("https://pds.example.com", "a.b.c", http=http)
    assert "HTTP 502" in str(info.value) and "HTML" in str(info.value)
    assert isinstance(info.value, errors.NetworkError)


def test_rate_limit_fields_c07():
    headers = {
        **JSON,
        "ratelimit-limit": "100",
        "ratelimit-remaining": "0",
        "ratelimit-reset": "1726684000",
        "ratelimit-policy": "100;w=86400",
    }
    http, _ = stub_http(
        lambda r: (429, headers, {"error": "RateLimitExceeded", "message": "slow"})
    )
    with pytest.raises(errors.RateLimitError) as info:
        xrpc.query("https://pds.example.com", "app.bsky.feed.searchPosts", http=http)
    exc = info.value
    assert exc.reset_at == dt.datetime(2024, 9, 18, 18, 26, 40, tzinfo=dt.timezone.utc)
    assert (exc.limit, exc.remaining, exc.window) == (100, 0, 86400)
    assert "2024-09-18 18:26:40 UTC" in str(exc)


def test_connection_error_and_timeout_are_network_errors():
    def refuse(request):
        raise requests.ConnectionError("refused")

    def slow(request):
        raise requests.ReadTimeout("slow")

    for answer, cause in ((refuse, requests.ConnectionError), (slow, requests.Timeout)):
        http, _ = stub_http(answer)
        with pytest.raises(errors.NetworkError) as info:
            xrpc.query("https://pds.example.com", "a.b.c", http=http)
        assert isinstance(info.value.__cause__, cause)


def test_debug_line_per_call_without_headers(caplog):
    secret = "Bearer eyJ-secret-value"
    http, _ = stub_http(lambda r: (200, JSON, {}))
    request = xrpc.Request(
        "GET", "https://pds.example.com", "a.b.c", headers={"Authorization": secret}
    )
    with caplog.at_level(logging.DEBUG, logger="atnb.xrpc"):
        xrpc.call(request, xrpc.HTTPTransport(http))
    lines = [r.getMessage() for r in caplog.records if r.name == "atnb.xrpc"]
    assert len(lines) == 1
    assert "GET a.b.c -> 200 (authenticated yes" in lines[0]
    assert "secret" not in caplog.text
    assert "secret" not in repr(request)


# -- redirects -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "keeps"),
    [
        ("https://pds.example.com/xrpc/a.b.d", True),
        ("https://evil.example.net/xrpc/a.b.c", False),
        ("https://pds.example.com:8443/xrpc/a.b.c", False),
        ("http://pds.example.com/xrpc/a.b.c", False),
    ],
)
def test_authorization_never_follows_a_redirect_to_another_origin(target, keeps):
    def answer(request):
        if request.url.startswith("https://pds.example.com/xrpc/a.b.c"):
            return 302, {"Location": target}, b""
        return 200, JSON, {"auth": request.headers.get("Authorization")}

    http, adapter = stub_http(answer)
    request = xrpc.Request(
        "GET", "https://pds.example.com", "a.b.c", headers={"Authorization": "Bearer x"}
    )
    data, _ = xrpc.call(request, xrpc.HTTPTransport(http))
    assert len(adapter.requests) == 2
    assert (data["auth"] == "Bearer x") is keeps


def test_netrc_does_not_replace_the_authorization_header(tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine pds.example.com login someone password other\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    http, adapter = stub_http(lambda request: (200, JSON, {}))
    request = xrpc.Request(
        "GET", "https://pds.example.com", "a.b.c", headers={"Authorization": "Bearer x"}
    )
    xrpc.call(request, xrpc.HTTPTransport(http))
    assert adapter.requests[0].headers["Authorization"] == "Bearer x"
