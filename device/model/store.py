"""The device's model store: install a signed bundle, switch to it atomically, keep the previous one.

Layout (``root`` is /var/lib/sonopi/models on a device; config ``[model].path`` points at ``current``)::

    root/store/<name>-<version>-<sha12>/   verified copies of bundles
    root/current  -> store/<id>            the active bundle (relative symlink, switched with rename)
    root/previous -> store/<id>            the one before, for rollback

``install`` verifies the Ed25519 signature *before* anything in ``root`` changes, copies the bundle,
verifies the copy again, then flips ``current``; on any failure the active model is untouched.

CLI (run by deploy/ scripts as root, or by an operator)::

    python -m device.model.store --root /var/lib/sonopi/models --public-key /etc/sonopi/model-signing.pub \
        install /media/usb/sonopi-lite0
    python -m device.model.store --root ... rollback
    python -m device.model.store --root ... status
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from device.errors import BundleError
from device.model.bundle import ModelBundle
from device.model.signing import load_public_key, verify_bundle

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/var/lib/sonopi/models")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class ModelStore:
    def __init__(self, root: str | os.PathLike[str], public_key: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.public_key_path = Path(public_key)
        self.store = self.root / "store"

    # --- queries ---

    def _target(self, name: str) -> str | None:
        link = self.root / name
        if not link.is_symlink():
            return None
        return Path(os.readlink(link)).name

    @property
    def current_id(self) -> str | None:
        return self._target("current")

    @property
    def previous_id(self) -> str | None:
        return self._target("previous")

    def active(self) -> ModelBundle:
        """The active bundle, verified again (a bundle changed on disk since install is refused)."""
        if self.current_id is None:
            raise BundleError(f"model store {self.root}: no active model installed")
        return verify_bundle(self.root / "current", load_public_key(self.public_key_path))

    def status(self) -> dict[str, object]:
        entries = sorted(p.name for p in self.store.iterdir()) if self.store.is_dir() else []
        return {"root": str(self.root), "current": self.current_id, "previous": self.previous_id, "installed": entries}

    # --- changes ---

    def install(self, source: str | os.PathLike[str], keep: int = 3) -> ModelBundle:
        """Verify ``source``, copy it into the store and make it current. Idempotent for the same bundle."""
        key = load_public_key(self.public_key_path)
        bundle = verify_bundle(source, key)  # refuse before touching the store
        entry_id = _entry_id(bundle)
        entry = self.store / entry_id
        self.store.mkdir(parents=True, exist_ok=True)
        if entry.is_dir():
            try:
                verify_bundle(entry, key)
            except BundleError as exc:
                log.warning("stored copy %s is damaged (%s); replacing it", entry, exc)
                if self.current_id == entry_id:
                    raise BundleError(
                        f"model store {self.root}: the active model {entry_id} is damaged on disk; roll back first, then reinstall"
                    ) from exc
                shutil.rmtree(entry)
        if not entry.is_dir():
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
            try:
                copy = staging / entry_id
                shutil.copytree(source, copy, symlinks=False)
                verify_bundle(copy, key)  # what landed on disk is what was signed
                _fsync_tree(copy)
                os.rename(copy, entry)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        if self.current_id != entry_id:
            self._activate(entry_id)
            log.info("model %s is now active (previous: %s)", entry_id, self.previous_id)
        else:
            log.info("model %s is already active", entry_id)
        self.prune(keep)
        return verify_bundle(self.root / "current", key)

    def rollback(self) -> str:
        """Make the previous model current again (and the current one previous)."""
        previous = self.previous_id
        if previous is None or not (self.store / previous).is_dir():
            raise BundleError(f"model store {self.root}: no previous model to roll back to")
        verify_bundle(self.store / previous, load_public_key(self.public_key_path))
        self._activate(previous)
        log.info("rolled back to model %s", previous)
        return previous

    def prune(self, keep: int = 3) -> list[str]:
        """Delete old entries beyond ``keep`` (never current or previous)."""
        if not self.store.is_dir():
            return []
        pinned = {self.current_id, self.previous_id}
        entries = sorted(self.store.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
        removed = []
        for path in entries[keep:]:
            if path.name not in pinned:
                shutil.rmtree(path)
                removed.append(path.name)
        return removed

    def _activate(self, entry_id: str) -> None:
        old = self.current_id
        _atomic_symlink(self.root / "current", f"store/{entry_id}")
        if old is not None and old != entry_id:
            _atomic_symlink(self.root / "previous", f"store/{old}")


def _entry_id(bundle: ModelBundle) -> str:
    m = bundle.manifest
    return _UNSAFE.sub("_", f"{m.name}-{m.version}-{m.model_sha256[:12]}")


def _atomic_symlink(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.tmp{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fd = os.open(link.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m device.model.store", description="signed model store")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--public-key", type=Path, default=Path("/etc/sonopi/model-signing.pub"))
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("install", help="verify a bundle directory and make it the active model")
    p.add_argument("bundle", type=Path)
    sub.add_parser("rollback", help="re-activate the previous model")
    sub.add_parser("status", help="print current/previous/installed as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    store = ModelStore(args.root, args.public_key)
    try:
        if args.cmd == "install":
            bundle = store.install(args.bundle)
            print(f"active model: {store.current_id} ({bundle.manifest.name} {bundle.manifest.version})")
        elif args.cmd == "rollback":
            print(f"active model: {store.rollback()}")
        else:
            print(json.dumps(store.status(), indent=2))
    except BundleError as exc:
        print(f"error: {exc}; the active model is unchanged ({store.current_id})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
