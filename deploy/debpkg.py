"""Debian packages on the workstation without touching its apt/dpkg state: a *private* apt configuration
(own lists and cache, the host's bookworm sources, any architecture, any dpkg status file), download
only, and dpkg status parsing. Used by deploy/check_aarch64.py (emulated arm64 sysroot) and
deploy/image.py (python3.11-venv for a base image that lacks it).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("debpkg")
HOST_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")


class DebError(Exception):
    pass


@dataclass(frozen=True)
class Installed:
    package: str
    version: str
    architecture: str
    provides: tuple[str, ...]


def parse_status(text: str) -> dict[str, Installed]:
    """The packages a dpkg status file lists as ``install ok installed`` (name -> Installed)."""
    found: dict[str, Installed] = {}
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Status", "").split()[-1:] != ["installed"] or "Package" not in fields:
            continue
        provides = tuple(p.split("(")[0].strip() for p in fields.get("Provides", "").split(",") if p.strip())
        found[fields["Package"]] = Installed(fields["Package"], fields.get("Version", ""), fields.get("Architecture", ""), provides)
    return found


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise DebError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc


class PrivateApt:
    """apt-get with its own lists/cache under ``root`` and a chosen dpkg status (default: empty)."""

    def __init__(self, root: Path, arch: str, status: Path | None = None) -> None:
        self.root, self.arch = root, arch
        self.status = status or root / "state/status"

    def options(self) -> list[str]:
        r = self.root
        opts = {
            "Dir::State": r / "state",
            "Dir::State::status": self.status,
            "Dir::Cache": r / "cache",
            "Dir::Etc": r / "etc",
            "Dir::Etc::SourceList": "/dev/null",
            "Dir::Etc::SourceParts": r / "etc/sources.list.d",
            "Dir::Etc::Trusted": "/etc/apt/trusted.gpg",
            "Dir::Etc::TrustedParts": "/etc/apt/trusted.gpg.d",
            "APT::Architecture": self.arch,
            "APT::Architectures::": self.arch,
            "APT::Sandbox::User": "root",
            "Debug::NoLocking": "1",
        }
        return ["-q", *(f"-o{k}={v}" for k, v in opts.items())]

    def update(self) -> None:
        if shutil.which("apt-get") is None:
            raise DebError("apt-get not found: Debian packages are fetched with the workstation's apt (Debian/Ubuntu)")
        if not HOST_SOURCES.is_file() or "bookworm" not in HOST_SOURCES.read_text():
            raise DebError(f"{HOST_SOURCES}: no Debian bookworm sources on this workstation (the Pi runs bookworm)")
        for sub in ("state/lists/partial", "cache/archives/partial", "etc/sources.list.d", "etc/preferences.d", "etc/apt.conf.d"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy2(HOST_SOURCES, self.root / "etc/sources.list.d" / HOST_SOURCES.name)
        if self.status == self.root / "state/status":
            self.status.write_text("")
        _run(["apt-get", *self.options(), "update"], f"apt-get update ({self.arch}, private lists in {self.root})")

    def closure(self, packages: list[str]) -> list[Path]:
        """Download what installing ``packages`` on top of ``status`` needs (nothing installed here)."""
        archives = self.root / "cache/archives"
        for old in archives.glob("*.deb"):
            old.unlink()
        _run(
            ["apt-get", *self.options(), "-y", "--download-only", "--no-install-recommends", "install", *packages],
            f"apt-get install --download-only {' '.join(packages)} ({self.arch})",
        )
        return sorted(archives.glob("*.deb"))

    def download(self, packages: list[str], dest: Path) -> list[Path]:
        dest.mkdir(parents=True, exist_ok=True)
        _run(["apt-get", *self.options(), "download", *packages], f"apt-get download {' '.join(packages)}", cwd=dest)
        return sorted(dest.glob("*.deb"))


def deb_field(deb: Path, field: str) -> str:
    return _run(["dpkg-deb", "-f", str(deb), field], f"dpkg-deb -f {deb.name}").stdout.strip()


def unpack(debs: list[Path], target: Path) -> None:
    """Each package's files into ``target`` (no maintainer scripts: nothing is configured). tar
    --keep-directory-symlink keeps the merged-/usr symlinks (bin, lib, sbin) of the target."""
    for deb in debs:
        fsys = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        tar = subprocess.run(["tar", "-x", "--keep-directory-symlink", "-C", str(target)], stdin=fsys.stdout, capture_output=True, text=True)
        assert fsys.stdout is not None
        fsys.stdout.close()
        if fsys.wait() != 0 or tar.returncode != 0:
            raise DebError(f"unpacking {deb.name} into {target} failed: {tar.stderr.strip()}")
