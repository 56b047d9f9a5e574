"""The console's settings (from the command line; see ``python -m hub web --help``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DB_ENV = "SONOPI_HUB_DB"
DEFAULT_DB = "var/hub.sqlite"


def default_db() -> str:
    return os.environ.get(DEFAULT_DB_ENV, DEFAULT_DB)


@dataclass(frozen=True)
class WebConfig:
    db: str  # SQLite path or PostgreSQL DSN, the same one ``hub serve`` writes
    host: str = "127.0.0.1"  # loopback by default: put a TLS reverse proxy in front (docs/web.md)
    port: int = 8080
    secure_cookies: bool = True  # False only for plain-HTTP development (drops Secure and __Host-)
    hsts: bool = False  # send Strict-Transport-Security (when the proxy does not)
    live_poll_s: float = 1.0  # how often the inbox event stream looks for new results
    devices_refresh_s: float = 5.0  # how often the devices page refreshes its table
    forwarded_allow_ips: str | None = None  # trust X-Forwarded-For/-Proto from these (the proxy)
    silent_after_intervals: float = 3.0  # the hub's [ingest] silent_after_intervals
    escalate_after_s: float = 3600.0  # the hub's [console] escalate_after_min, in seconds
    devices_file: Path | None = None  # the hub's [console] devices_file: provisioned devices (hub/web/provisioned.py)
