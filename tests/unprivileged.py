"""Running a piece of test code as an unprivileged user.

Root ignores file modes, and CI runs as root: to exercise "permission denied" and "read-only"
for real, the code runs in a forked child that has dropped to the ``nobody`` user (when the
suite is not root, it runs as is). The child reports a string back through a pipe.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

NOBODY = 65534


def make_traversable(folder: Path) -> None:
    """Let 'nobody' reach ``folder`` (pytest's base temp dir is 0700)."""
    folder.chmod(0o755)
    for parent in folder.parents:
        if parent != Path("/") and parent.stat().st_mode & 0o001 == 0:
            parent.chmod(parent.stat().st_mode | 0o001)


def run_unprivileged(fn: Callable[[], str]) -> str:
    if os.geteuid() != 0:
        return fn()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges, run, report, exit without running pytest's teardown
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(write_end, fn().encode())
        except BaseException as exc:  # reported to the parent as the result
            os.write(write_end, f"child failed: {exc!r}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as pipe:
        return pipe.read().decode()
