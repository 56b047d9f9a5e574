"""Keeps the image source's state that the heartbeat carries true: ``ok`` while frames arrive, ``lost`` while the
source is gone (docs/mqtt.md, heartbeat ``source_state``).

The device application (``device run``, the touchscreen) reports what it sees; the uplink, another process, reads
it from the store (``device.link.uplink.heartbeat.read_source_state``) and ignores a report older than
``SOURCE_STATE_STALE_S`` — so the reporter writes on every change and again every ``refresh_s`` while nothing
changes, and otherwise writes nothing (calling it per frame costs a comparison).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

SOURCE_STATE_STALE_S = 300.0  # a report older than this says nothing (the application may be gone); read by the heartbeat
REFRESH_S = SOURCE_STATE_STALE_S / 5  # well inside the staleness window


class SourceState(StrEnum):
    """The heartbeat's ``source_state`` (docs/mqtt.md); the values travel in JSON and are stored in the store's meta."""

    OK = "ok"
    LOST = "lost"


class SourceStateReporter:
    """``write(state, detail)`` is called on a change, and every ``refresh_s`` while unchanged (``refresh()``)."""

    def __init__(self, write: Callable[[str, str], None], refresh_s: float = REFRESH_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._write, self._refresh_s, self._clock = write, refresh_s, clock
        self._last: tuple[SourceState, str] | None = None
        self._written_at = 0.0

    @property
    def state(self) -> SourceState | None:
        return self._last[0] if self._last is not None else None

    def report(self, state: SourceState, detail: str = "") -> None:
        current = (SourceState(state), detail)
        if current != self._last or self._clock() - self._written_at >= self._refresh_s:
            self._last, self._written_at = current, self._clock()
            self._write(current[0].value, detail)

    def refresh(self) -> None:
        """Re-write the last state if it is due (a timer calls this while nothing changes)."""
        if self._last is not None:
            self.report(*self._last)
