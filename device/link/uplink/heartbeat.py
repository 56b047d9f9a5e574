"""What a heartbeat says about the device: uptime, backlog, disk, SoC temperature/throttling, latency, and whether
it can work at all — its model bundle (ok / missing / rejected) and its image source (ok / lost).

The model state is checked here, by the uplink, on the configured bundle (:func:`model_state`; re-checked only
when the bundle's files change). The source is the device application's: it writes what its frame reader sees
with :func:`write_source_state` into the store (like the uplink's own state, ``device/link/uplink/state.py``), and
the heartbeat carries it while it is fresh (:data:`SOURCE_STATE_STALE_S`); otherwise it is left out (unknown).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from device.clock import parse_iso, utc_now_iso
from device.errors import SonopiError
from device.link.contract import HeartbeatMessage
from device.model.bundle import load_bundle
from device.source_state import SOURCE_STATE_STALE_S, SourceState
from device.store import ResultStore

log = logging.getLogger(__name__)

THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")
THROTTLED = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")  # Raspberry Pi firmware driver
LATENCY_SAMPLE = 50
SOURCE_META_KEY = "source_state"
SOURCE_STATES = tuple(SourceState)  # ok / lost (device.source_state)
DETAIL_MAX = 200


class ModelState(StrEnum):
    """The heartbeat's ``model_state`` (docs/mqtt.md): the configured bundle loads, is not there, or is refused."""

    OK = "ok"
    MISSING = "missing"
    REJECTED = "rejected"


_model_cache: dict[str, tuple[tuple[object, ...], tuple[ModelState, str | None]]] = {}


def soc_temperature_c(path: Path = THERMAL_ZONE) -> float | None:
    try:
        return round(int(path.read_text().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None


def throttled_flags(path: Path = THROTTLED) -> str | None:
    """The firmware's throttling bit mask as hex (``0x0`` = never throttled), when readable."""
    try:
        return hex(int(path.read_text().strip(), 16))
    except (OSError, ValueError):
        return None


def disk_free_bytes(path: Path) -> int | None:
    try:
        return int(shutil.disk_usage(path).free)
    except OSError:
        return None


def latency_p50_ms(store: ResultStore, sample: int = LATENCY_SAMPLE) -> float | None:
    values = [r.latency_ms for r in store.history(limit=sample) if r.latency_ms is not None]
    return round(statistics.median(values), 1) if values else None


def age_s(iso: str | None) -> float | None:
    if iso is None:
        return None
    try:
        then = parse_iso(iso)
    except ValueError:
        return None
    return round(max(0.0, (datetime.now(UTC) - then).total_seconds()), 1)


def _detail(text: str) -> str:
    clean = "".join(c if c.isprintable() else " " for c in text)
    return clean if len(clean) <= DETAIL_MAX else clean[: DETAIL_MAX - 1] + "…"


def _bundle_stamp(path: Path) -> tuple[object, ...]:
    """What changes when the bundle is replaced: the directory's entries with their size and mtime."""
    try:
        with os.scandir(path) as entries:
            return tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries if e.is_file()))
    except OSError as exc:
        return ("unreadable", str(exc))


def model_state(path: Path | None) -> tuple[ModelState, str | None]:
    """``(ok | missing | rejected, detail)`` for the configured bundle; loaded (sha256 checked) again only when its
    files changed."""
    if path is None:
        return ModelState.MISSING, "no model bundle configured"
    if not path.exists():
        return ModelState.MISSING, _detail(f"model bundle {path} is not there")
    stamp = _bundle_stamp(path)
    cached = _model_cache.get(str(path))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        load_bundle(path)
        state: tuple[ModelState, str | None] = (ModelState.OK, None)
    except (SonopiError, OSError, ValueError) as exc:
        state = (ModelState.REJECTED, _detail(str(exc)))
    _model_cache[str(path)] = (stamp, state)
    return state


def write_source_state(store: ResultStore, state: SourceState | str, detail: str = "") -> None:
    """The device application's image source: ``ok`` (frames arrive) or ``lost`` (gone, being reopened)."""
    if state not in SOURCE_STATES:
        raise ValueError(f"unknown source state {state!r} (one of {', '.join(SOURCE_STATES)})")
    store.set_meta(SOURCE_META_KEY, json.dumps({"state": state, "detail": _detail(detail), "at": utc_now_iso()}))


def read_source_state(store: ResultStore, stale_after_s: float = SOURCE_STATE_STALE_S) -> tuple[SourceState | None, str | None]:
    """The application's last source report, or ``(None, None)`` when there is none, it is unreadable or stale."""
    raw = store.get_meta(SOURCE_META_KEY)
    if raw is None:
        return None, None
    try:
        data = json.loads(raw)
        state, detail, at = data["state"], data.get("detail") or None, data["at"]
    except (TypeError, ValueError, KeyError):
        log.warning("heartbeat: unreadable source state in the store: %r", raw[:80])
        return None, None
    age = age_s(at)
    if state not in SOURCE_STATES or age is None or age > stale_after_s:
        return None, None
    return SourceState(state), detail


def build_heartbeat(
    store: ResultStore,
    *,
    site: str,
    device_id: str,
    interval_s: float,
    started_monotonic: float,
    model_path: Path | None = None,
    check_model: bool = False,
) -> HeartbeatMessage:
    """``check_model``: report the state of the bundle at ``model_path`` (the uplink passes its configured one)."""
    backlog = store.backlog()
    model, model_detail = model_state(model_path) if check_model else (None, None)
    source, source_detail = read_source_state(store)
    return HeartbeatMessage(
        device_id=device_id,
        site=site,
        at=utc_now_iso(),
        interval_s=interval_s,
        uptime_s=round(time.monotonic() - started_monotonic, 1),
        backlog=backlog.pending,
        oldest_pending_age_s=age_s(backlog.oldest_created_at),
        disk_free_bytes=disk_free_bytes(store.path.parent),
        soc_temp_c=soc_temperature_c(),
        throttled=throttled_flags(),
        latency_p50_ms=latency_p50_ms(store),
        model_state=model,
        model_detail=model_detail,
        source_state=source,
        source_detail=source_detail,
    )
