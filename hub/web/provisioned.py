"""The devices provisioned for this hub, from ``[console] devices_file``: those that never connected are shown.

A device that was given credentials but whose uplink never reached the broker has sent nothing, so the hub's
``devices`` table cannot know it. The console compares the provisioning list with it.

The file is plain text, one device a line: ``site/device_id`` (the broker account name that
``deploy/mosquitto/sonopi-mqtt.sh add-device SITE DEVICE`` creates). A copy of the broker's ``acl`` file can be
used as it is: its ``user site/device_id`` lines are read, ``topic`` lines, the hub's own accounts (no ``/``),
comments (``#``) and blank lines are skipped. The console does not read the broker's directory itself: it holds
the passwords and keys (0600, the broker's user), usually on another host. Any other line is an error naming the
file and line. The file is read again when it changes (size or mtime), so adding a device needs no restart.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from device.errors import SonopiError

NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_DEVICE = re.compile(rf"^(?:user\s+)?({NAME})/({NAME})$")
_SKIP = re.compile(rf"^(?:#.*|topic\s+.*|pattern\s+.*|user\s+{NAME})$")


class ProvisionError(SonopiError):
    code = "provision_list_invalid"


def parse(text: str, source: str) -> frozenset[tuple[str, str]]:
    devices: set[tuple[str, str]] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or _SKIP.match(line):
            continue
        match = _DEVICE.match(line)
        if match is None:
            shown = line if len(line) <= 80 else line[:79] + "…"
            raise ProvisionError(f"{source}:{number}: not a device (expected site/device_id or 'user site/device_id'): {shown!r}")
        devices.add((match.group(1), match.group(2)))
    return frozenset(devices)


@dataclass
class ProvisionList:
    """The list at ``path``, re-read when the file changes."""

    path: Path
    _stamp: tuple[int, int] | None = None
    _devices: frozenset[tuple[str, str]] = field(default_factory=frozenset)

    def devices(self) -> frozenset[tuple[str, str]]:
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            raise ProvisionError(f"[console] devices_file {self.path}: cannot read ({exc.strerror})") from exc
        stamp = (stat.st_size, stat.st_mtime_ns)
        if stamp != self._stamp:
            try:
                text = self.path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ProvisionError(f"[console] devices_file {self.path}: cannot read ({exc})") from exc
            self._devices = parse(text, str(self.path))
            self._stamp = stamp
        return self._devices
