"""systemd notification (sd_notify) without a dependency.

The services run with ``Type=notify`` and ``WatchdogSec=``: systemd kills and restarts a process
that stops sending ``WATCHDOG=1``. Call from the service's main loop::

    from device import watchdog
    watchdog.notify("READY=1")            # once, when started up
    watchdog.notify("WATCHDOG=1")         # periodically, at least every watchdog.interval_s()
    watchdog.notify("STOPPING=1")         # optional, on clean shutdown

Every call is a no-op (returns False) when ``NOTIFY_SOCKET`` is unset, i.e. outside systemd,
so development runs and tests need no special casing.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def _address(raw: str) -> str | bytes:
    # '@name' is a Linux abstract-namespace socket: leading NUL byte.
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    return raw


def notify(state: str) -> bool:
    """Send ``state`` (e.g. "READY=1", "WATCHDOG=1", "STATUS=...") to systemd; True if sent."""
    raw = os.environ.get("NOTIFY_SOCKET")
    if not raw:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(_address(raw))
            sock.sendall(state.encode("utf-8"))
        return True
    except OSError as exc:  # never let notification break the service itself
        log.warning("sd_notify to %s failed: %s", raw, exc)
        return False


def interval_s(default: float = 10.0) -> float:
    """How often to send WATCHDOG=1: half of systemd's WatchdogSec (WATCHDOG_USEC), else ``default``."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return default
    try:
        return max(0.5, int(usec) / 1e6 / 2)
    except ValueError:
        return default


class Pinger:
    """Rate-limited ``WATCHDOG=1`` for a service's main loop: call :meth:`beat` as often as you like
    (every loop iteration); it notifies systemd at most every :func:`interval_s` seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._interval = interval_s()
        self._next = 0.0

    def beat(self) -> None:
        now = self._clock()
        if now >= self._next:
            notify("WATCHDOG=1")
            self._next = now + self._interval
