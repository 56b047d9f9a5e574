"""What a heartbeat says about the device: uptime, backlog, disk, SoC temperature/throttling, latency."""

from __future__ import annotations

import logging
import shutil
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from device.contract import HeartbeatMessage
from device.results import utc_now_iso
from device.store import ResultStore

log = logging.getLogger(__name__)

THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")
THROTTLED = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")  # Raspberry Pi firmware driver
LATENCY_SAMPLE = 50


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
        then = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    return round(max(0.0, (datetime.now(UTC) - then).total_seconds()), 1)


def build_heartbeat(
    store: ResultStore, *, site: str, device_id: str, interval_s: float, started_monotonic: float
) -> HeartbeatMessage:
    backlog = store.backlog()
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
    )
