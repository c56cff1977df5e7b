"""Where atnb looks things up, in one place.

The defaults point at the public network and are for users. Tests and the
devnet override them, either with environment variables read at import time
or by assigning attributes of :data:`settings`::

    import atnb
    atnb.settings.plc_url = "http://localhost:2582"

Environment variables:
    ATNB_PLC_URL, ATNB_ENTRYWAY, ATNB_PUBLIC_APPVIEW: service URLs.
    ATNB_NAMESERVERS: comma-separated ``host`` or ``host:port`` for DNS TXT;
        ``none`` turns the DNS method off (handles then resolve over HTTPS).
    ATNB_HOST_MAP: comma-separated ``name=url`` pairs (tests: where the
        ``https://name/.well-known/...`` of a handle or did:web is served).
    ATNB_STORE: ``keyring`` (default), ``file`` or ``memory``.
    ATNB_STORE_PATH: the folder of the file store.
    ATNB_INACTIVITY_TIMEOUT: seconds; 0 disables (default 14 days).
    ATNB_RESOLVE_TIMEOUT: seconds for each identity look-up (default 3).
    ATNB_DIRECT_PUBLIC_READS: ``1`` sends public ``app.bsky.*`` reads of
        frames straight to the public AppView even with a session.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

__all__ = ["Settings", "settings"]

DEFAULT_PLC_URL = "https://plc.directory"
DEFAULT_ENTRYWAY = "https://bsky.social"
DEFAULT_PUBLIC_APPVIEW = "https://public.api.bsky.app"
DEFAULT_INACTIVITY_TIMEOUT = 14 * 24 * 3600.0


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _host_map(value: str | None) -> dict[str, str]:
    pairs = (part.partition("=") for part in _split(value))
    return {name.strip().lower(): url.strip() for name, _, url in pairs if url}


def _default_store_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "atnb" / "sessions"


@dataclasses.dataclass
class Settings:
    """atnb's configuration: resolvers, defaults, timeouts and the store."""

    plc_url: str = DEFAULT_PLC_URL
    entryway: str = DEFAULT_ENTRYWAY
    public_appview: str = DEFAULT_PUBLIC_APPVIEW
    nameservers: list[str] = dataclasses.field(default_factory=list)
    host_map: dict[str, str] = dataclasses.field(default_factory=dict)
    resolve_timeout: float = 3.0
    resolve_cache_ttl: float = 600.0
    request_timeout: float = 30.0
    refresh_skew: float = 120.0
    inactivity_timeout: float = DEFAULT_INACTIVITY_TIMEOUT
    direct_public_reads: bool = False
    store: str = "keyring"
    store_path: Path = dataclasses.field(default_factory=_default_store_path)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Build settings from ``ATNB_*`` environment variables."""
        env = os.environ if environ is None else environ
        new = cls()
        new.plc_url = env.get("ATNB_PLC_URL") or new.plc_url
        new.entryway = env.get("ATNB_ENTRYWAY") or new.entryway
        new.public_appview = env.get("ATNB_PUBLIC_APPVIEW") or new.public_appview
        new.nameservers = _split(env.get("ATNB_NAMESERVERS"))
        new.host_map = _host_map(env.get("ATNB_HOST_MAP"))
        new.store = (env.get("ATNB_STORE") or new.store).strip().lower()
        if env.get("ATNB_STORE_PATH"):
            new.store_path = Path(env["ATNB_STORE_PATH"])
        if env.get("ATNB_INACTIVITY_TIMEOUT"):
            new.inactivity_timeout = float(env["ATNB_INACTIVITY_TIMEOUT"])
        if env.get("ATNB_RESOLVE_TIMEOUT"):
            new.resolve_timeout = float(env["ATNB_RESOLVE_TIMEOUT"])
        direct = env.get("ATNB_DIRECT_PUBLIC_READS", "").strip().lower()
        new.direct_public_reads = direct in ("1", "true", "yes")
        return new

    def reset(self) -> None:
        """Reload every field from the environment (tests use this)."""
        fresh = Settings.from_env()
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(fresh, field.name))


settings = Settings.from_env()
