"""Device health from the last heartbeat: disk, SoC temperature, throttling — each with a state and an action.

The heartbeat carries ``disk_free_bytes``, ``soc_temp_c`` and ``throttled`` (the Raspberry Pi firmware's
``vcgencmd get_throttled`` bit mask); the hub keeps the latest values in its ``devices`` table. Limits:

- disk: below 2 GiB free → warning, below 500 MiB → critical (results and the backlog need room);
- temperature: from 75 °C → warning, from 80 °C → critical (the Pi's firmware starts throttling at 80 °C);
- throttling: under-voltage, frequency capping, throttling or the soft temperature limit *now*
  (bits 0–3) → critical; any of them *since boot* (bits 16–19) → warning;
- model (heartbeat ``model_state``, optional): ``missing`` or ``rejected`` → critical (it cannot analyse);
- image source (heartbeat ``source_state``, optional, from the device application): ``lost`` → critical;
- uplink: a device on the provisioning list (``[console] devices_file``) that never connected → critical.

A value the heartbeat did not carry is unknown, never healthy.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hub.store import DeviceState

GIB = 1024**3
DISK_WARN_BYTES = 2 * GIB
DISK_CRITICAL_BYTES = 512 * 1024**2
TEMP_WARN_C = 75.0
TEMP_CRITICAL_C = 80.0

_NOW_BITS = {0: "under-voltage", 1: "CPU frequency capped", 2: "throttled", 3: "soft temperature limit"}
_SINCE_BOOT_BITS = {16: "under-voltage", 17: "frequency capping", 18: "throttling", 19: "soft temperature limit"}


class Level(enum.IntEnum):
    OK = 0
    UNKNOWN = 1
    WARNING = 2
    CRITICAL = 3

    @property
    def css(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Check:
    name: str  # disk | temperature | power | model | source | uplink
    level: Level
    value: str  # what the heartbeat said, for the operator
    action: str  # what to do about it, in plain language ("" when fine)


@dataclass(frozen=True)
class Health:
    checks: tuple[Check, ...]

    @property
    def level(self) -> Level:
        return max((c.level for c in self.checks if c.level is not Level.UNKNOWN), default=Level.UNKNOWN)

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    @property
    def actions(self) -> list[str]:
        return [c.action for c in sorted(self.checks, key=lambda c: -c.level) if c.action]


def _size(n: int) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / 1024**2:.0f} MiB"


def disk(free: int | None) -> Check:
    if free is None:
        return Check("disk", Level.UNKNOWN, "—", "")
    if free < DISK_CRITICAL_BYTES:
        return Check(
            "disk", Level.CRITICAL, f"{_size(free)} free", "Disk almost full: results may stop being stored. Free space or replace the SD card today."
        )
    if free < DISK_WARN_BYTES:
        return Check("disk", Level.WARNING, f"{_size(free)} free", "Disk getting full: plan to free space.")
    return Check("disk", Level.OK, f"{_size(free)} free", "")


def temperature(celsius: float | None) -> Check:
    if celsius is None:
        return Check("temperature", Level.UNKNOWN, "—", "")
    text = f"{celsius:.0f} °C"
    if celsius >= TEMP_CRITICAL_C:
        return Check(
            "temperature", Level.CRITICAL, text, "Overheating: the device slows down. Move it out of the sun, away from the scanner's vents."
        )
    if celsius >= TEMP_WARN_C:
        return Check("temperature", Level.WARNING, text, "Running hot: check its ventilation.")
    return Check("temperature", Level.OK, text, "")


def power(throttled: str | None) -> Check:
    if not throttled:
        return Check("power", Level.UNKNOWN, "—", "")
    try:
        mask = int(throttled, 16) if throttled.lower().startswith("0x") else int(throttled)
    except ValueError:
        return Check("power", Level.UNKNOWN, throttled, "")
    now = [text for bit, text in _NOW_BITS.items() if mask >> bit & 1]
    before = [text for bit, text in _SINCE_BOOT_BITS.items() if mask >> bit & 1]
    if now:
        action = (
            "Under-voltage: use the supplied 5 V power adapter, not the scanner's USB port."
            if mask & 1
            else "Throttled now: it is too hot or under-powered; check power and ventilation."
        )
        return Check("power", Level.CRITICAL, ", ".join(now) + " now", action)
    if before:
        return Check(
            "power", Level.WARNING, ", ".join(before) + " since boot", "Was throttled since it started: check the power adapter and ventilation."
        )
    return Check("power", Level.OK, "ok", "")


def _short(detail: str | None) -> str:
    return f" ({detail})" if detail else ""


def model(state: str | None, detail: str | None = None) -> Check:
    if state is None:
        return Check("model", Level.UNKNOWN, "—", "")
    if state == "missing":
        return Check(
            "model",
            Level.CRITICAL,
            "no model",
            "No model installed: the device cannot analyse images. Reinstall the model bundle from the "
            f"release and restart the device{_short(detail)}.",
        )
    if state == "rejected":
        return Check(
            "model",
            Level.CRITICAL,
            "model refused",
            "The model bundle failed its checks (damaged or not from the release): the device cannot analyse "
            f"images. Reinstall the release's bundle{_short(detail)}.",
        )
    return Check("model", Level.OK, "ok", "")


def source(state: str | None, detail: str | None = None) -> Check:
    if state is None:
        return Check("source", Level.UNKNOWN, "—", "")
    if state == "lost":
        return Check(
            "source",
            Level.CRITICAL,
            "lost",
            "No image from the scanner: check that the scanner is on and the video cable or USB capture "
            f"stick is plugged into the device{_short(detail)}.",
        )
    return Check("source", Level.OK, "ok", "")


NEVER_CONNECTED = Check(
    "uplink",
    Level.CRITICAL,
    "never connected",
    "Provisioned, never connected: its uplink has not reached the hub. Check that the device is "
    "powered and on the clinic network, and that its credentials (uplink.toml, certificates) "
    "were copied to it.",
)


def health(device: DeviceState, *, never_connected: bool = False) -> Health:
    checks = [
        disk(device.disk_free_bytes),
        temperature(device.soc_temp_c),
        power(device.throttled),
        model(getattr(device, "model_state", None), getattr(device, "model_detail", None)),
        source(getattr(device, "source_state", None), getattr(device, "source_detail", None)),
    ]
    if never_connected:
        checks.append(NEVER_CONNECTED)
    return Health(tuple(checks))
