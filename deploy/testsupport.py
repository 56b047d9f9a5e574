"""Fixtures for tests/deploy/test_deploy*.py: a small disk image with the Raspberry Pi OS layout, stand-in
wheels, throwaway keys and secrets. Built with the real tools (sfdisk, mkfs.vfat, mkfs.ext4)."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

MiB = 1 << 20
BOOT_START = 8192  # sectors, as Raspberry Pi OS
BOOT_SECTORS = 40 * MiB // 512
ROOT_START = BOOT_START + BOOT_SECTORS
TOOLS = ("sfdisk", "mkfs.vfat", "mkfs.ext4", "mcopy", "minfo", "debugfs", "e2fsck", "resize2fs", "stdbuf", "xz")


def missing_tools(extra: tuple[str, ...] = ()) -> list[str]:
    return [t for t in (*TOOLS, *extra) if shutil.which(t) is None and not Path("/usr/sbin", t).exists() and not Path("/sbin", t).exists()]


PYTHON_VERSION = "3.11.2-6+deb12u6"  # the python3.11 package of the synthetic image


def _dpkg_stanza(package: str, version: str, arch: str = "arm64") -> str:
    return f"Package: {package}\nStatus: install ok installed\nArchitecture: {arch}\nVersion: {version}\n\n"


def _rootfs_skeleton(tree: Path, python_venv: bool = True) -> None:
    """The few files of a Raspberry Pi OS root that first boot touches. ``python_venv=False``: a
    python3.11 without Debian's python3.11-venv (no ensurepip, no bundled pip wheel)."""
    etc = tree / "etc"
    (etc / "systemd/system/multi-user.target.wants").mkdir(parents=True)
    (etc / "ssh/sshd_config.d").mkdir(parents=True)
    (tree / "home").mkdir()
    (tree / "opt").mkdir()
    (tree / "var/lib").mkdir(parents=True)
    (tree / "usr/lib/systemd/system").mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\nsudo:x:27:\nvideo:x:44:\ninput:x:105:\nrender:x:106:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\nsudo:*::\nvideo:*::\ninput:*::\nrender:*::\n")
    (etc / "shadow").chmod(0o640)
    (etc / "gshadow").chmod(0o640)
    (etc / "hostname").write_text("raspberrypi\n")
    (etc / "hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n")
    (etc / "login.defs").write_text(
        "UID_MIN 1000\nUID_MAX 60000\nSYS_UID_MIN 100\nSYS_UID_MAX 999\nGID_MIN 1000\nGID_MAX 60000\nSYS_GID_MIN 100\nSYS_GID_MAX 999\n"
    )
    status = _dpkg_stanza("python3.11", PYTHON_VERSION)
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/python3.11").write_text("")  # a stand-in: the tests never run the image's Python
    if python_venv:
        status += _dpkg_stanza("python3.11-venv", PYTHON_VERSION) + _dpkg_stanza("python3-pip-whl", "23.0.1+dfsg-1", "all")
        (tree / "usr/lib/python3.11/ensurepip").mkdir(parents=True)
        (tree / "usr/lib/python3.11/ensurepip/__init__.py").write_text("")
        (tree / "usr/share/python-wheels").mkdir(parents=True)
        (tree / "usr/share/python-wheels/pip-23.0.1-py3-none-any.whl").write_bytes(b"")
    (tree / "var/lib/dpkg").mkdir(parents=True)
    (tree / "var/lib/dpkg/status").write_text(status)
    (tree / "usr/lib/systemd/system/ssh.service").write_text(
        "[Unit]\nDescription=OpenBSD Secure Shell server\n[Service]\nExecStart=/usr/sbin/sshd -D\n[Install]\nWantedBy=multi-user.target\n"
    )


def make_base_image(path: Path, root_mib: int = 48, work: Path | None = None, python_venv: bool = True) -> Path:
    """A sparse image: MBR, FAT32 'bootfs' at sector 8192 (40 MiB), ext4 'rootfs' after it.
    ``python_venv=False``: its python3.11 cannot make a venv (Debian's python3.11-venv missing)."""
    work = work or path.parent
    total = ROOT_START * 512 + root_mib * MiB
    with open(path, "wb") as fh:
        fh.truncate(total)
    layout = f"label: dos\nunit: sectors\nstart={BOOT_START}, size={BOOT_SECTORS}, type=c\nstart={ROOT_START}, type=83\n"
    subprocess.run(["sfdisk", "-q", str(path)], input=layout, text=True, check=True)
    subprocess.run(
        ["mkfs.vfat", "-F", "32", "-n", "bootfs", "--offset", str(BOOT_START), str(path), str(BOOT_SECTORS // 2)], check=True, capture_output=True
    )
    subprocess.run(
        ["mcopy", "-i", f"{path}@@{BOOT_START * 512}", "-", "::/cmdline.txt"],
        input=b"console=serial0,115200 console=tty1 root=PARTUUID=x-02 rootfstype=ext4 fsck.repair=yes rootwait\n",
        check=True,
    )
    tree = work / "rootfs-skeleton"
    shutil.rmtree(tree, ignore_errors=True)
    _rootfs_skeleton(tree, python_venv)
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-L", "rootfs", "-E", f"offset={ROOT_START * 512}", "-d", str(tree), str(path), f"{root_mib}M"],
        check=True,
        capture_output=True,
    )
    return path


def make_wheel(out_dir: Path, name: str, version: str = "0.1", files: dict[str, str] | None = None) -> Path:
    """A minimal valid pure-Python wheel."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = dict(files or {f"{name}/__init__.py": f"VERSION = {version!r}\n"})
    dist = f"{name}-{version}.dist-info"
    files[f"{dist}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    files[f"{dist}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: sonopi-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for rel, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{rel},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    path = out_dir / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for rel, text in sorted(files.items()):
            zf.writestr(zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0)), text)
    return path


def make_shim_wheels(out_dir: Path) -> Path:
    """Stand-in for the aarch64 wheel set: one wheel whose .pth adds this interpreter's site-packages
    (numpy, LiteRT, pydantic, cryptography...) to the deployed venv, so the deployed code runs here."""
    site = sysconfig.get_paths()["purelib"]
    make_wheel(out_dir, "sonopi_test_shim", files={"sonopi_test_shim.pth": site + "\n"})
    return out_dir


def base_python() -> str:
    """The interpreter this venv was made from (venvs are created from it, as from /usr/bin/python3 on a Pi)."""
    return getattr(sys, "_base_executable", sys.executable)


def ssh_keypair(directory: Path, name: str = "id_ed25519") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sonopi-test", "-f", str(key)], check=True)
    return key


def secrets_dir(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in {"ca.crt": "CA\n", "device.crt": "CERT\n", "device.key": "KEY-SECRET\n", "mqtt.password": "hunter2\n"}.items():
        (directory / name).write_text(text)
    return directory
