"""A freed frame's memory goes back to the system once the allocator's threshold is fixed (device/allocator.py).

In a fresh process each: a 24 MiB buffer (a frame near the decode limit) is allocated and freed, then a 20 MiB and
a 10 MiB one. With glibc's own moving threshold the later two come from the heap and 20 MiB stays resident after
they are freed (the premise, checked); after ``map_large_blocks_apart()`` (what ``python -m device`` and the
touchscreen call first) under 4 MiB does. Skipped, saying so, where the C library has no ``mallopt``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from device.allocator import map_large_blocks_apart
from tests.mqtt_broker import REPO

_RETAINED = """
import sys
import numpy as np
from device.allocator import map_large_blocks_apart

def rss():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS:")).split()[1]) * 1024

if sys.argv[1] == "fixed":
    assert map_large_blocks_apart()
frame = np.ones(24 * 2**20, np.uint8)
del frame
before = rss()
for mib in (20, 10):
    frame = np.ones(mib * 2**20, np.uint8)
    del frame
print(rss() - before)
"""


def _retained(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _RETAINED, mode], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout)


@pytest.mark.skipif(not map_large_blocks_apart(), reason="the C library has no mallopt (not glibc): nothing to fix")
def test_freed_frames_are_returned_to_the_system_with_the_threshold_fixed() -> None:
    assert _retained("moving") > 15 * 2**20, "the premise: glibc's moving threshold keeps a freed frame resident"
    assert _retained("fixed") < 4 * 2**20
