"""Write a file so that a power cut leaves the old content or the new, never a torn file: a temporary file beside
it, synced, renamed over it, and the folder synced so the rename itself is on disk. Used by the bundle writer, the
site-bundle record and the teach folder."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (OSError when it cannot; the temporary file is then removed)."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        with open(partial, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, path)
    except OSError:
        partial.unlink(missing_ok=True)
        raise
    sync_dir(path.parent)


def sync_dir(folder: Path) -> None:
    """fsync a folder (its entries: a rename, a removal); best effort where the platform does not allow it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
