"""Edit a Raspberry Pi OS disk image in place, unprivileged: no loop devices, no mounts, no boot.

    python deploy/image.py check IMAGE
    python deploy/image.py customize IMAGE --root-tree DIR [--boot-tree DIR]
    python deploy/image.py python-venv IMAGE --out DIR [--debs DIR] [--cache DIR]

* partition table: ``sfdisk --json`` (util-linux) gives the two partitions' offsets;
* boot (FAT32): mtools (``mcopy -i IMAGE@@OFFSET``) writes files straight into the image;
* root (ext4): e2fsprogs' ``debugfs -w 'IMAGE?offset=N'`` creates directories, files and symlinks
  with explicit mode/uid/gid; ``e2fsck``/``resize2fs`` (same ``?offset=`` syntax) check the file
  system; when the payload does not fit, ``sfdisk -N 2`` moves the partition end and ``resize2fs``
  grows the file system (on a copy of the partition, see grow_root).

``python-venv``: can the image's Python 3.11 make the release's venv (Debian ships ``venv``'s ensurepip
separately, in ``python3.11-venv``)? If not, the missing .debs (arm64, python3.11-venv at exactly the
image's python3.11 version) are put in ``--out`` for first boot's ``dpkg -i`` — from ``--debs`` or
downloaded from Debian bookworm with a private apt configuration — or the flash fails here.

``--root-tree`` mirrors target paths; every *new* entry gets the staged mode, owner root:root (the
first boot hands files to the ``sonopi`` user, which does not exist yet). Directories that already
exist in the image keep their mode and owner.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from debpkg import DebError, PrivateApt, deb_field, parse_status

log = logging.getLogger("image")
SECTOR = 512
MARGIN = 128 << 20  # free space left on the root fs after the payload
FAT_TYPES = {"b", "c", "e", "ef"}
LINUX_TYPES = {"83"}


class ImageError(Exception):
    pass


@dataclass(frozen=True)
class Partition:
    start: int  # bytes
    size: int  # bytes
    type: str

    @property
    def end(self) -> int:
        return self.start + self.size


def _run(cmd: list[str], *, input: str | None = None, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True)
    if proc.returncode not in ok:
        raise ImageError(f"{shlex.join(cmd)} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
    return proc


def partitions(image: Path) -> tuple[Partition, Partition]:
    """(boot, root) of a Raspberry Pi OS layout: FAT first partition, Linux second."""
    if not image.is_file():
        raise ImageError(f"{image}: no such image file")
    proc = subprocess.run(["sfdisk", "--json", str(image)], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise ImageError(f"{image}: no readable partition table — not a Raspberry Pi OS image, or corrupted")
    table = json.loads(proc.stdout)["partitiontable"]
    sector = table.get("sectorsize", SECTOR)
    parts = [Partition(p["start"] * sector, p["size"] * sector, p["type"].lower()) for p in table.get("partitions", [])]
    if len(parts) < 2 or parts[0].type not in FAT_TYPES or parts[1].type not in LINUX_TYPES:
        raise ImageError(
            f"{image}: expected a FAT boot partition then a Linux root partition, found {[p.type for p in parts]} — not a Raspberry Pi OS image"
        )
    if parts[1].end > image.stat().st_size:
        raise ImageError(f"{image}: root partition ends past the end of the file — truncated or corrupted image")
    return parts[0], parts[1]


def _ext4(image: Path, root: Partition) -> str:
    return f"{image}?offset={root.start}"


def _fat(image: Path, boot: Partition) -> str:
    return f"{image}@@{boot.start}"


def check(image: Path) -> tuple[Partition, Partition]:
    """Refuse a corrupted image: partition table, FAT readable, ext4 clean (read-only checks)."""
    boot, root = partitions(image)
    proc = subprocess.run(["minfo", "-i", _fat(image, boot), "::"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageError(f"{image}: boot partition is not a readable FAT file system ({proc.stderr.strip()})")
    proc = subprocess.run(["e2fsck", "-fn", _ext4(image, root)], capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stdout + proc.stderr).strip().splitlines()
        raise ImageError(f"{image}: root partition is not a clean ext4 file system: {' / '.join(detail[-3:])}")
    return boot, root


# --- ext4 via debugfs -------------------------------------------------------------------------


def debugfs(
    image: Path, root: Partition, commands: list[str], write: bool = False, tolerate: dict[str, str] | None = None
) -> list[tuple[str, list[str]]]:
    """Run debugfs commands in one batch; return (command, output lines). debugfs always exits 0, so
    each command's output is checked: an error line fails, unless ``tolerate[verb]`` matches it."""
    tolerate = tolerate or {}
    with tempfile.NamedTemporaryFile("w", suffix=".debugfs", delete=False) as fh:
        fh.write("\n".join(commands) + "\n")
        script = fh.name
    try:
        cmd = ["stdbuf", "-oL", "debugfs", *(["-w"] if write else []), "-f", script, _ext4(image, root)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    finally:
        os.unlink(script)
    if proc.returncode != 0:
        raise ImageError(f"debugfs on {image} failed: {proc.stdout.strip()}")
    blocks: list[tuple[str, list[str]]] = []
    for line in proc.stdout.splitlines():
        if line.startswith("debugfs: "):
            blocks.append((line[len("debugfs: ") :], []))
        elif blocks:
            blocks[-1][1].append(line)
        elif not line.startswith("debugfs "):
            raise ImageError(f"debugfs on {image}: {line}")
    if write:
        for command, lines in blocks:
            verb = command.split()[0]
            for line in lines:
                if line.startswith("Allocated inode"):
                    continue
                if verb in tolerate and re.search(tolerate[verb], line):
                    continue
                raise ImageError(f"debugfs on {image}: `{command}`: {line}")
    return blocks


def existing(image: Path, root: Partition, paths: list[str]) -> set[str]:
    blocks = debugfs(image, root, [f'stat "{p}"' for p in paths])
    return {cmd[6:-1] for cmd, lines in blocks if not any("File not found" in line for line in lines)}


def free_bytes(image: Path, root: Partition) -> int:
    out = _run(["dumpe2fs", "-h", _ext4(image, root)]).stdout
    fields = dict(re.findall(r"^([A-Za-z ]+):\s+(\S+)", out, re.M))
    return int(fields["Free blocks"]) * int(fields["Block size"])


def grow_root(image: Path, root: Partition, extra: int) -> Partition:
    """Append ``extra`` bytes to the image, extend partition 2 to the end, resize the ext4 fs.

    e2fsck/resize2fs run on a copy of the partition in its own file: resize2fs 1.47 with
    ``?offset=`` left unreadable bitmaps in testing, so the partition is copied out and back (dd)."""
    size = image.stat().st_size
    if root.end < size - (4 << 20):
        raise ImageError(f"{image}: root partition is not at the end of the image; cannot grow it")
    extra = math.ceil(extra / (4 << 20)) * (4 << 20)
    log.info("growing the root file system by %d MiB", extra >> 20)
    with open(image, "r+b") as fh:
        fh.truncate(size + extra)
    _run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", "-N", "2", str(image)], input=", +\n")
    _, new_root = partitions(image)
    part = image.with_name(image.name + ".root")
    try:
        _run(
            [
                "dd",
                f"if={image}",
                f"of={part}",
                "bs=4M",
                "iflag=skip_bytes,count_bytes",
                f"skip={new_root.start}",
                f"count={new_root.size}",
                "conv=sparse",
                "status=none",
            ]
        )
        _run(["e2fsck", "-fy", str(part)], ok=(0, 1))
        _run(["resize2fs", str(part)])
        _run(["dd", f"if={part}", f"of={image}", "bs=4M", "oflag=seek_bytes", f"seek={new_root.start}", "conv=notrunc,fsync", "status=none"])
    finally:
        part.unlink(missing_ok=True)
    return new_root


def _q(path: str) -> str:
    if '"' in path or "\n" in path:
        raise ImageError(f"unsupported character in path {path!r}")
    return f'"{path}"'


def put_root_tree(image: Path, root: Partition, tree: Path) -> int:
    """Copy ``tree`` into the root fs; returns the number of entries written."""
    entries = sorted(tree.rglob("*"), key=lambda p: (len(p.relative_to(tree).parts), str(p)))
    targets = {p: "/" + p.relative_to(tree).as_posix() for p in entries}
    dirs = [targets[p] for p in entries if p.is_dir() and not p.is_symlink()]
    present = existing(image, root, dirs) if dirs else set()
    commands: list[str] = []
    for path in entries:
        target = targets[path]
        st = path.lstat()
        perm = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            if target in present:
                continue
            commands += [f"mkdir {_q(target)}", f"set_inode_field {_q(target)} mode 0{stat.S_IFDIR | perm:o}"]
        elif stat.S_ISLNK(st.st_mode):
            commands += [f"rm {_q(target)}", f"symlink {_q(target)} {_q(os.readlink(path))}"]
            continue  # symlinks: owner root, mode 0777 as created
        elif stat.S_ISREG(st.st_mode):
            commands += [f"rm {_q(target)}", f"write {_q(str(path))} {_q(target)}", f"set_inode_field {_q(target)} mode 0{stat.S_IFREG | perm:o}"]
        else:
            raise ImageError(f"{path}: only files, directories and symlinks can be staged")
        commands += [f"set_inode_field {_q(target)} uid 0", f"set_inode_field {_q(target)} gid 0"]
    debugfs(image, root, commands, write=True, tolerate={"rm": r"File not found by ext2_lookup"})
    return len(entries)


def put_boot_tree(image: Path, boot: Partition, tree: Path) -> int:
    count = 0
    for path in sorted(tree.rglob("*")):
        rel = path.relative_to(tree).as_posix()
        if path.is_dir():
            _run(["mmd", "-D", "s", "-i", _fat(image, boot), f"::/{rel}"], ok=(0, 1))
        else:
            _run(["mcopy", "-D", "o", "-i", _fat(image, boot), str(path), f"::/{rel}"])
        count += 1
    return count


def tree_size(tree: Path) -> int:
    return sum(p.lstat().st_size + 4096 for p in tree.rglob("*"))


def customize(image: Path, root_tree: Path, boot_tree: Path | None) -> None:
    boot, root = check(image)
    need = tree_size(root_tree) + MARGIN
    free = free_bytes(image, root)
    if free < need:
        root = grow_root(image, root, need - free)
    n = put_root_tree(image, root, root_tree)
    log.info("root: %d entries written", n)
    if boot_tree is not None:
        log.info("boot: %d entries written", put_boot_tree(image, boot, boot_tree))
    check(image)


# --- can the base image's Python make a venv? ----------------------------------------------------------

PY = "python3.11"
ENSUREPIP = f"/usr/lib/{PY}/ensurepip/__init__.py"
WHEEL_DIRS = ("/usr/share/python-wheels", f"/usr/lib/{PY}/ensurepip/_bundled")
VENV_PACKAGE = f"{PY}-venv"


@dataclass(frozen=True)
class PythonVenv:
    python_version: str | None  # the image's python3.11 package version (dpkg status)
    ensurepip: bool  # ensurepip module present
    wheels: tuple[str, ...]  # pip/setuptools wheels ensurepip can install from
    venv_package: bool  # python3.11-venv installed per the dpkg status
    dpkg_status: str = ""  # the image's /var/lib/dpkg/status ("" if none): apt resolves against it

    @property
    def can_make_venv(self) -> bool:
        return self.ensurepip and any(w.startswith("pip-") for w in self.wheels)


def _read_file(image: Path, root: Partition, path: str) -> str | None:
    blocks = debugfs(image, root, [f"cat {_q(path)}"])
    text = "\n".join(blocks[0][1]) if blocks else ""
    if not blocks or re.search(r"File not found by ext2_lookup|cat: ", text):
        return None
    return text + "\n"


def python_venv(image: Path) -> PythonVenv:
    """Read the root file system (debugfs, read-only): dpkg status, ensurepip, bundled wheels."""
    _, root = partitions(image)
    status = _read_file(image, root, "/var/lib/dpkg/status")
    installed = parse_status(status) if status else {}
    names: list[str] = []
    for folder in WHEEL_DIRS:
        blocks = debugfs(image, root, [f"ls {_q(folder)}"])
        lines = " ".join(blocks[0][1]) if blocks else ""
        if "File not found" not in lines:
            names += [n for n in lines.split() if n.endswith(".whl")]
    have_ensurepip = bool(existing(image, root, [ENSUREPIP]))
    py = installed.get(PY)
    if py is None and not existing(image, root, [f"/usr/bin/{PY}"]):
        raise ImageError(
            f"{image}: no {PY} (neither in /var/lib/dpkg/status nor /usr/bin/{PY}) — not Raspberry Pi OS Bookworm (the release needs its Python 3.11)"
        )
    return PythonVenv(py.version if py else None, have_ensurepip, tuple(sorted(set(names))), VENV_PACKAGE in installed, status or "")


def venv_debs(image: Path, out: Path, debs: Path | None, cache: Path) -> list[Path]:
    """The .debs first boot must ``dpkg -i`` so the image's Python can make a venv ([] if none).
    Raises ImageError naming the image and the package when they cannot be had."""
    state = python_venv(image)
    if state.can_make_venv:
        log.info("%s: %s %s can make a venv (ensurepip, wheels: %s)", image.name, PY, state.python_version or "?", ", ".join(state.wheels))
        return []
    version = state.python_version
    if not version:
        raise ImageError(
            f"{image}: {PY} cannot make a venv (no ensurepip) and its package version is unknown "
            f"(no dpkg status entry): cannot choose {VENV_PACKAGE}; use an image with python3-venv"
        )
    log.info(
        "%s: %s %s cannot make a venv (ensurepip %s, pip wheel %s): first boot will install %s=%s",
        image.name,
        PY,
        version,
        "present" if state.ensurepip else "missing",
        "present" if any(w.startswith("pip-") for w in state.wheels) else "missing",
        VENV_PACKAGE,
        version,
    )
    out.mkdir(parents=True, exist_ok=True)
    found = _given_debs(debs, version) if debs else _download_debs(image, version, state.dpkg_status, cache)
    for deb in found:
        shutil.copy2(deb, out / deb.name)
    return sorted(out / deb.name for deb in found)


def _given_debs(debs: Path, version: str) -> list[Path]:
    files = sorted(debs.glob("*.deb"))
    venv = [d for d in files if deb_field(d, "Package") == VENV_PACKAGE]
    if not venv:
        raise ImageError(f"VENV_DEBS={debs}: no {VENV_PACKAGE} .deb (the base image needs {VENV_PACKAGE}={version})")
    for deb in venv:
        got, arch = deb_field(deb, "Version"), deb_field(deb, "Architecture")
        if (got, arch) != (version, "arm64"):
            raise ImageError(
                f"VENV_DEBS={debs}: {deb.name} is {VENV_PACKAGE} {got} ({arch}); the base image's "
                f"{PY} is {version}, so it needs {VENV_PACKAGE}={version} (arm64)"
            )
    return files


def _download_debs(image: Path, version: str, dpkg_status: str, cache: Path) -> list[Path]:
    """apt resolves against the *image's* dpkg status: exactly what is missing there, pinned to its version."""
    apt = PrivateApt(cache, "arm64", status=cache / "image-status")
    try:
        apt.update()
        apt.status.write_text(dpkg_status)
        found = apt.closure([f"{VENV_PACKAGE}={version}"])
    except DebError as exc:
        raise ImageError(
            f"{image}: its {PY} {version} cannot make a venv, and {VENV_PACKAGE}={version} (arm64) could not be "
            f"fetched from Debian bookworm: {exc}\n— use a newer Raspberry Pi OS Lite image (its {PY} then matches the "
            f"archive), or give VENV_DEBS=DIR with {VENV_PACKAGE}_{version}_arm64.deb and its dependencies"
        ) from exc
    bad = [d.name for d in found if deb_field(d, "Architecture") not in ("arm64", "all")]
    if bad:
        raise ImageError(f"apt resolved non-arm64 packages for the image: {', '.join(bad)}")
    installed = parse_status(apt.status.read_text())
    changed = [f"{p} {installed[p].version} -> {deb_field(d, 'Version')}" for d in found if (p := deb_field(d, "Package")) in installed]
    if changed:  # first boot must only add packages, never up/downgrade what the image has
        raise ImageError(
            f"{image}: installing {VENV_PACKAGE}={version} would (re)install packages the image already has "
            f"(its dpkg status is inconsistent, or the archive moved on): "
            f"{', '.join(changed)}; use a newer base image or VENV_DEBS=DIR"
        )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="edit a Raspberry Pi OS image without mounting it")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("check")
    p.add_argument("image", type=Path)
    p = sub.add_parser("customize")
    p.add_argument("image", type=Path)
    p.add_argument("--root-tree", type=Path, required=True)
    p.add_argument("--boot-tree", type=Path)
    p = sub.add_parser("python-venv", help="the .debs first boot needs so the image's Python can make a venv")
    p.add_argument("image", type=Path)
    p.add_argument("--out", type=Path, required=True, help="where the needed .debs go (none when not needed)")
    p.add_argument("--debs", type=Path, help="use these .debs instead of downloading them")
    p.add_argument("--cache", type=Path, default=Path(__file__).resolve().parent.parent / "build/flash/apt-arm64")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="image: %(message)s", stream=sys.stderr)
    try:
        if args.cmd == "check":
            boot, root = check(args.image)
            print(json.dumps({"boot_offset": boot.start, "root_offset": root.start, "root_size": root.size}))
        elif args.cmd == "python-venv":
            for deb in venv_debs(args.image, args.out, args.debs, args.cache):
                print(deb)
        else:
            customize(args.image, args.root_tree, args.boot_tree)
    except ImageError as exc:
        print(f"image: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
