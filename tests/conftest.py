"""Shared fixtures: the devnet, its front, accounts, and loopback-only settings.

Every test runs with atnb.settings pointed at loopback addresses where nothing
public can be reached; tests that use the devnet ask for ``devnet_settings``
(or a fixture that depends on it) to point them at the local network.
"""

from __future__ import annotations

import socket

import pytest

import atnb
from atnb.devnet import Devnet

# Loopback addresses where nothing listens: a forgotten override fails fast
# instead of reaching a public host.
DEAD_HTTP = "http://127.0.0.1:9"
DEAD_DNS = "127.0.0.1:9"

pytest_plugins = [
    "tests.conftest_keyring",
    "tests.conftest_identity",
    "tests.conftest_jupyter",
]


def _dead_settings() -> None:
    atnb.settings.reset()
    atnb.settings.plc_url = DEAD_HTTP
    atnb.settings.entryway = DEAD_HTTP
    atnb.settings.public_appview = DEAD_HTTP
    atnb.settings.nameservers = [DEAD_DNS]
    # Every https://<name>/.well-known look-up goes to a dead loopback port,
    # never to the system resolver.
    atnb.settings.host_map = {"*": DEAD_HTTP}
    atnb.settings.resolve_timeout = 1.0


@pytest.fixture(autouse=True)
def _loopback_only_settings(tmp_path, monkeypatch):
    """Point every resolver at dead loopback ports; keep stores out of $HOME."""
    for name in ("ATNB_IDENTIFIER", "ATNB_PASSWORD", "ATNB_SERVICE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ATNB_STORE", "memory")
    monkeypatch.setenv("ATNB_STORE_PATH", str(tmp_path / "atnb-store"))
    _dead_settings()
    atnb.settings.store = "memory"
    atnb.settings.store_path = tmp_path / "atnb-store"
    yield
    _dead_settings()


@pytest.fixture(scope="session")
def devnet():
    """The local AT Protocol network, started once per test session."""
    with Devnet(two_factor=True) as net:
        yield net


@pytest.fixture
def devnet_settings(devnet):
    """atnb.settings pointed at the devnet (PLC, entryway, public AppView)."""
    atnb.settings.plc_url = devnet.plc_url
    atnb.settings.entryway = devnet.pds_url
    atnb.settings.public_appview = devnet.appview_url
    return atnb.settings


@pytest.fixture
def devnet_env(devnet) -> dict[str, str]:
    """Environment variables that point a child process (a kernel) at the devnet."""
    return devnet.environment()


@pytest.fixture
def front(devnet, devnet_settings):
    """The devnet's front with counters and faults cleared for this test."""
    devnet.front.reset(two_factor=True)
    yield devnet.front
    devnet.front.reset(two_factor=True)


@pytest.fixture
def make_account(devnet):
    """A factory of fresh devnet accounts: ``make_account(app_password=True)``."""
    return devnet.create_account


@pytest.fixture
def account(devnet):
    """A fresh account with an app password."""
    return devnet.create_account(app_password=True)


@pytest.fixture(scope="session")
def seeded(devnet):
    """The sample accounts and data of ``python -m atnb.devnet seed``."""
    from atnb.devnet.seed import seed

    return seed(devnet)


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
