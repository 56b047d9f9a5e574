"""The one ISO 8601 UTC format of every stored and sent timestamp: ``2026-12-01T15:25:29.123Z``.

Milliseconds, always UTC, ``Z`` rather than ``+00:00``: the text sorts as time does (the stores index and compare
it as text) and reads the same in SQLite, PostgreSQL, the MQTT contract and a CSV.
"""

from __future__ import annotations

from datetime import UTC, datetime


def to_iso(moment: datetime) -> str:
    """A timezone-aware moment as the project's ISO text (converted to UTC)."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: a stored time must say its timezone")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now_iso() -> str:
    """Now, as the project's ISO text."""
    return to_iso(datetime.now(UTC))


def parse_iso(text: str) -> datetime:
    """The project's ISO text (or any ISO 8601 with a zone, ``Z`` included) -> an aware datetime.
    ValueError for text that is not one, or has no timezone."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no timezone")
    return moment
