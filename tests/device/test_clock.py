"""The one timestamp format (device/clock.py): milliseconds, UTC, ``Z``; text order is time order; a naive or
zone-less time is refused rather than guessed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from device.clock import parse_iso, to_iso, utc_now_iso


def test_format_round_trips_and_converts_to_utc() -> None:
    moment = datetime(2026, 12, 1, 16, 5, 9, 123000, tzinfo=timezone(timedelta(hours=2)))
    text = to_iso(moment)
    assert text == "2026-12-01T14:05:09.123Z"
    assert parse_iso(text) == moment
    assert parse_iso(utc_now_iso()).tzinfo is not None


def test_text_order_is_time_order() -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    moments = [base + timedelta(milliseconds=k * 997) for k in range(50)]
    assert sorted(to_iso(m) for m in moments) == [to_iso(m) for m in moments]


def test_naive_or_zone_less_times_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        to_iso(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="no timezone"):
        parse_iso("2026-01-01T00:00:00")
    with pytest.raises(ValueError):
        parse_iso("yesterday")
