"""The uplink's connection state, shared with the UI through the store (no network code here).

The uplink process writes it on every change and with every heartbeat; the UI reads it for its
status bar. A state older than ``stale_after_s`` means the uplink process is not running.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum

from device.clock import parse_iso, utc_now_iso
from device.store import ResultStore

META_KEY = "uplink_state"


class Connection(StrEnum):
    """The uplink's connection to the broker, as the UI's status bar reads it (stored as JSON text in the store's meta)."""

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    STOPPED = "stopped"


STATES = tuple(Connection)


@dataclass(frozen=True)
class UplinkState:
    state: str  # a Connection value (read back from JSON as text)
    broker: str
    detail: str = ""
    updated_at: str = ""

    def age_s(self, now: datetime | None = None) -> float:
        updated = parse_iso(self.updated_at)
        return ((now or datetime.now(UTC)) - updated).total_seconds()


def write_state(store: ResultStore, state: Connection | str, broker: str, detail: str = "") -> None:
    if state not in STATES:
        raise ValueError(f"unknown uplink state {state!r}")
    record = UplinkState(state=state, broker=broker, detail=detail, updated_at=utc_now_iso())
    store.set_meta(META_KEY, json.dumps(asdict(record)))


def read_state(store: ResultStore) -> UplinkState | None:
    raw = store.get_meta(META_KEY)
    if raw is None:
        return None
    try:
        return UplinkState(**json.loads(raw))
    except (TypeError, ValueError):
        return None
