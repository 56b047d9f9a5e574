"""Release gate: the release, installed as on a Raspberry Pi 4, run on aarch64 under user-mode emulation.

    python deploy/check_aarch64.py [--images 24|all|N|PATH] [--tolerance 0] [--keep-going]
    make check-aarch64 [AARCH64_IMAGES=all]

No root-wide install, no binfmt_misc, no system package installed. Everything lives in build/aarch64/:

* ``sysroot/``  Debian bookworm arm64 (Python 3.11.2, glibc 2.36, as Raspberry Pi OS Bookworm): the
  dependency closure of python3.11 + python3.11-venv (+ libstdc++6, libgcc-s1, libgomp1 for the
  wheels' .so files), resolved with a *private* apt configuration (the host's bookworm sources, an
  empty dpkg status, APT::Architecture=arm64) and unpacked with ``dpkg-deb``; cached.
* ``host/``     qemu-user-static (amd64, Debian's 7.2; ``apt-get download`` + ``dpkg-deb`` as the sysroot, never
  installed) and, when this machine has no mosquitto, Debian's mosquitto the same way.
* ``bin/python3.11``  a wrapper ``qemu-aarch64-static -cpu cortex-a72 -L sysroot -0 "$0" …/python3.11``.
  Without binfmt the kernel cannot exec an aarch64 ELF, so every Python that starts a Python
  (venv's ensurepip, pip) must start a *script*: ``-0 "$0"`` makes the guest's ``sys.executable`` the
  wrapper (or the venv's symlink to it), so ``subprocess.run([sys.executable, ...])`` works and the
  venv is found from ``pyvenv.cfg`` as usual. ``install-release.sh`` runs unchanged with
  ``SONOPI_BASE_PYTHON`` = the wrapper.
* ``sysroot/proc/cpuinfo``  EMULATION ONLY: a Raspberry Pi 4 cpuinfo. qemu-user's ``-L`` makes the
  guest open it instead of the host's x86 /proc/cpuinfo, which makes ai_edge_litert segfault in
  ``Interpreter()``. A real Pi has its own; nothing of this reaches a release.

Then, with the installed release: ``config check`` on a config rendered as ``make flash`` renders it,
``activate-release.sh`` (model store, signature verified), ``classify --json`` on real images compared
image by image with the x86 ``classify --json`` of this checkout, ``run --once --headless`` on a folder,
``selftest`` when the CLI has it, and the uplink to a local Mosquitto + an x86 hub (every result acked).
Exit 0 only when every step passed and no label/inconclusive flag differs and no probability differs by
more than --tolerance (0: the JSON's 6 decimals identical).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "deploy"))

from debpkg import HOST_SOURCES, DebError, PrivateApt, unpack  # noqa: E402  (after the sys.path lines that find deploy/)

log = logging.getLogger("check-aarch64")

ARM64_PACKAGES = ("python3.11", "python3.11-venv", "python3", "libstdc++6", "libgcc-s1", "libgomp1")
QEMU_PACKAGES = ("qemu-user-static",)
MOSQUITTO_PACKAGES = ("mosquitto", "libmosquitto1", "libcjson1", "libdlt2", "libwrap0")
QEMU_CPU = "cortex-a72"  # the Raspberry Pi 4's core
DEFAULT_IMAGES = 24
DEVICE_ID, SITE = "emu-aarch64-01", "emu-site"

# EMULATION ONLY: what a Raspberry Pi 4 (BCM2711, 4 x Cortex-A72 r0p3) shows in /proc/cpuinfo.
PI4_CPUINFO = (
    "".join(
        f"processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n"
        f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n"
        for n in range(4)
    )
    + "Hardware\t: BCM2835\nRevision\t: c03114\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"
)


class CheckError(Exception):
    """A step of the gate failed; the message names the step and the problem."""


@dataclass
class Layout:
    root: Path
    work_dir: Path | None = None

    @property
    def sysroot(self) -> Path:
        return self.root / "sysroot"

    @property
    def host(self) -> Path:
        return self.root / "host"

    @property
    def qemu(self) -> Path:
        return self.host / "usr/bin/qemu-aarch64-static"

    @property
    def python(self) -> Path:
        return self.root / "bin/python3.11"

    @property
    def prefix(self) -> Path:
        """The staged device root (SONOPI_PREFIX of the device scripts)."""
        return self.root / "device"

    @property
    def work(self) -> Path:
        return self.work_dir or self.root / "work"


@dataclass
class Timer:
    steps: list[tuple[str, float]] = field(default_factory=list)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        log.info("--- %s", name)
        start = time.monotonic()
        try:
            yield
        finally:
            took = time.monotonic() - start
            self.steps.append((name, took))
            log.info("    %s: %.1f s", name, took)


def run(
    cmd: list[str | Path], *, what: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    args = [str(c) for c in cmd]
    log.debug("$ %s", " ".join(args))
    try:
        proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise CheckError(f"{what}: timed out after {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-25:])
        raise CheckError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc


# --- Debian packages (deploy/debpkg.py: private apt configuration, nothing installed) ---------------------


def _stamp(packages: tuple[str, ...]) -> str:
    return hashlib.sha256((HOST_SOURCES.read_bytes() if HOST_SOURCES.is_file() else b"") + "\n".join(packages).encode()).hexdigest()


def prepare_sysroot(lay: Layout) -> None:
    marker = lay.sysroot / ".complete"
    stamp = _stamp(ARM64_PACKAGES)
    if marker.is_file() and marker.read_text().strip() == stamp:
        log.info("sysroot cached: %s", lay.sysroot)
        return
    apt = PrivateApt(lay.root / "apt-arm64", "arm64")  # empty dpkg status: the whole closure
    apt.update()
    debs = apt.closure(list(ARM64_PACKAGES))
    staging = Path(tempfile.mkdtemp(prefix=".sysroot.", dir=lay.root))
    for name in ("bin", "lib", "sbin"):  # merged /usr, as Raspberry Pi OS Bookworm
        (staging / "usr" / name).mkdir(parents=True)
        (staging / name).symlink_to(f"usr/{name}")
    unpack(debs, staging)
    # qemu's -L falls back to the host's path when the sysroot lacks one: shadow the host's
    # Python package directories, or the guest would import the host's x86 dist-packages.
    for shadow in ("usr/lib/python3/dist-packages", "usr/local/lib/python3.11/dist-packages"):
        (staging / shadow).mkdir(parents=True, exist_ok=True)
    (staging / "packages.txt").write_text("".join(f"{d.name}\n" for d in debs))
    if lay.sysroot.exists():
        shutil.rmtree(lay.sysroot)
    staging.rename(lay.sysroot)
    marker.write_text(stamp + "\n")
    log.info("sysroot: %d Debian arm64 packages unpacked into %s", len(debs), lay.sysroot)


def system_mosquitto() -> str | None:
    for path in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(path, os.X_OK):
            return path
    return shutil.which("mosquitto")


def prepare_host_tools(lay: Layout) -> None:
    packages = QEMU_PACKAGES + (() if system_mosquitto() else MOSQUITTO_PACKAGES)
    marker = lay.host / ".complete"
    if marker.is_file() and set(packages) <= set(marker.read_text().split()):
        log.info("host tools cached: %s", lay.host)
        return
    debs_dir = lay.root / "debs-amd64"
    shutil.rmtree(debs_dir, ignore_errors=True)
    apt = PrivateApt(lay.root / "apt-amd64", "amd64")
    apt.update()
    debs = apt.download(list(packages), debs_dir)
    lay.host.mkdir(parents=True, exist_ok=True)
    unpack(debs, lay.host)
    if not os.access(lay.qemu, os.X_OK):
        raise CheckError(f"{lay.qemu} missing after unpacking qemu-user-static")
    for other in lay.qemu.parent.glob("qemu-*-static"):  # only the aarch64 emulator is needed
        if other != lay.qemu:
            other.unlink()
    shutil.rmtree(debs_dir, ignore_errors=True)
    marker.write_text("\n".join(packages) + "\n")


def write_emulation_files(lay: Layout) -> None:
    proc = lay.sysroot / "proc"
    proc.mkdir(exist_ok=True)
    (proc / "cpuinfo").write_text(PI4_CPUINFO)
    (proc / "README.EMULATION-ONLY").write_text(
        "EMULATION ONLY. Written by deploy/check_aarch64.py for qemu-user: the guest reads this Raspberry Pi 4 cpuinfo\n"
        "instead of the host's x86 one (ai_edge_litert segfaults in Interpreter() on the latter).\n"
    )
    lay.python.parent.mkdir(parents=True, exist_ok=True)
    lay.python.write_text(
        "#!/bin/sh\n"
        "# aarch64 Python 3.11 of build/aarch64/sysroot under qemu-user (deploy/check_aarch64.py).\n"
        "# -0 \"$0\": the guest's argv[0] (sys.executable) is this script, or the venv's link to it,\n"
        "# so a Python that starts Python (ensurepip, pip) starts this wrapper again.\n"
        f'exec "{lay.qemu}" -cpu {QEMU_CPU} -L "{lay.sysroot}" -0 "$0" "{lay.sysroot}/usr/bin/python3.11" "$@"\n'
    )
    lay.python.chmod(0o755)


def guest_env(lay: Layout) -> dict[str, str]:
    """A clean environment: nothing of this checkout's or the host's Python leaks into the guest."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TZ", "TERM")}
    return {**keep, "HOME": str(lay.work), "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def check_interpreter(lay: Layout) -> str:
    out = run(
        [
            lay.python,
            "-c",
            "import platform, sys, ssl, sqlite3; print(platform.machine(), platform.python_version(), '-'.join(platform.libc_ver()), sys.prefix)",
        ],
        what="the emulated Python",
        env=guest_env(lay),
        cwd=lay.work,
    ).stdout.strip()
    machine, version, libc, _ = out.split()
    if (machine, version, libc) != ("aarch64", "3.11.2", "glibc-2.36"):
        raise CheckError(f"the emulated Python is {out!r}, expected aarch64 3.11.2 glibc-2.36 (bookworm)")
    return out


# --- the release, installed as on the device -----------------------------------------------------------


def signed_model(lay: Layout, model: Path, public_key: Path | None) -> tuple[Path, Path]:
    """The bundle and the key to verify it. A bundle signed for ``public_key`` is used as is; otherwise a
    copy is signed with a throwaway key kept in build/aarch64/keys (same key, same bytes, same release id)."""
    from device.errors import BundleError
    from device.model.signing import generate_keypair, load_private_key, load_public_key, sign_bundle, verify_bundle

    if public_key and public_key.is_file():
        try:
            verify_bundle(model, load_public_key(public_key))
            return model, public_key
        except BundleError as exc:
            log.warning("%s does not verify with %s (%s): signing a copy with a throwaway key", model, public_key, exc)
    keys = lay.root / "keys"
    if not (keys / "model-signing.key").is_file():
        generate_keypair(keys)
    private, public = keys / "model-signing.key", keys / "model-signing.pub"
    copy = lay.root / "model" / model.name
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(model, copy, ignore=shutil.ignore_patterns("__pycache__", "signature.json"))
    sign_bundle(copy, load_private_key(private))
    log.info("model %s signed with the gate's throwaway key %s (not a release key)", model, public)
    return copy, public


def build_release(lay: Layout, model: Path, public_key: Path, wheels: Path, python: str) -> Path:
    if not list(wheels.glob("*.whl")):
        run([REPO / "deploy/fetch-wheels.sh", wheels], what="deploy/fetch-wheels.sh", env={**os.environ, "PYTHON": python})
    proc = run(
        [python, REPO / "deploy/build_release.py", "--model", model, "--public-key", public_key, "--wheels", wheels, "--out", lay.root / "release"],
        what="deploy/build_release.py",
    )
    return Path(proc.stdout.strip().splitlines()[-1])


def install_release(lay: Layout, release: Path, public_key: Path) -> Path:
    """Copy the release into the staged device root and run the device's own install-release.sh and
    activate-release.sh, with SONOPI_BASE_PYTHON = the emulated /usr/bin/python3."""
    release_id = (release / "RELEASE").read_text().strip()
    target = lay.prefix / "opt/sonopi/releases" / release_id
    if not (target / ".installed").is_file():
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(release, target, symlinks=True, ignore=shutil.ignore_patterns(".complete"))
    (lay.prefix / "etc/sonopi").mkdir(parents=True, exist_ok=True)
    shutil.copy2(public_key, lay.prefix / "etc/sonopi/model-signing.pub")
    env = {**guest_env(lay), "SONOPI_BASE_PYTHON": str(lay.python), "SONOPI_PREFIX": str(lay.prefix)}
    proc = run([target / "deploy/device/install-release.sh", target], what="install-release.sh (emulated)", env=env, timeout=3600)
    log.info("%s", proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "installed")
    run([target / "deploy/device/activate-release.sh", release_id], what="activate-release.sh (emulated)", env=env, timeout=600)
    return target


def prune_old_releases(lay: Layout, keep: Path, max_age_days: float = 2.0) -> None:
    """Every source edit makes a new release id: drop gate installs and builds unused for days (never
    the one in use, ``current`` or ``previous``)."""
    cutoff = time.time() - max_age_days * 86400
    opt = lay.prefix / "opt/sonopi"
    linked = {(opt / name).resolve() for name in ("current", "previous") if (opt / name).is_symlink()}
    for rel in sorted((opt / "releases").glob("*")):
        if rel != keep and rel.resolve() not in linked and rel.stat().st_mtime < cutoff:
            log.info("pruning the old emulated install %s", rel.name)
            shutil.rmtree(rel, ignore_errors=True)
    for built in sorted((lay.root / "release").glob("*")):
        if built.name not in (keep.name, f"sonopi-{keep.name}.tar") and built.stat().st_mtime < cutoff:
            shutil.rmtree(built, ignore_errors=True) if built.is_dir() else built.unlink()


def guest_python(release: Path) -> Path:
    return release / "venv/bin/python"


def check_installed(lay: Layout, release: Path) -> None:
    py = guest_python(release)
    run(
        [py, "-m", "pip", "check", "--disable-pip-version-check"],
        what="pip check in the emulated venv",
        env=guest_env(lay),
        cwd=lay.work,
        timeout=600,
    )
    where = run(
        [py, "-c", "import device, numpy, cv2, ai_edge_litert; print(device.__file__); print(cv2.__version__)"],
        what="importing the release in the emulated venv",
        env=guest_env(lay),
        cwd=lay.work,
    ).stdout.split()
    if not where[0].startswith(str(release / "venv")):
        raise CheckError(f"the emulated venv imports device from {where[0]}, not from the installed release")
    missing = missing_libraries(lay, release)
    if missing:
        raise CheckError("shared libraries missing in the arm64 sysroot (add their packages to ARM64_PACKAGES):\n" + "\n".join(missing))
    log.info("pip check clean; device from %s; opencv %s; every .so resolves its libraries", where[0], where[1])


def missing_libraries(lay: Layout, release: Path) -> list[str]:
    """The aarch64 dynamic loader's view (ld.so --list) of every extension module in the venv."""
    loader = lay.sysroot / "usr/lib/ld-linux-aarch64.so.1"
    sos = sorted((release / "venv/lib").rglob("*.so*"))
    missing: list[str] = []
    for chunk in range(0, len(sos), 40):
        script = "".join(f'echo "== {so}"; "{lay.qemu}" -L "{lay.sysroot}" "{loader}" --list "{so}" 2>&1\n' for so in sos[chunk : chunk + 40])
        out = run(["sh", "-c", script], what="ld.so --list", check=False).stdout
        current = ""
        for line in out.splitlines():
            if line.startswith("== "):
                current = line[3:]
            elif "not found" in line:
                missing.append(f"{Path(current).name}: {line.strip()}")
    return missing


# --- the device commands -------------------------------------------------------------------------------


def x86_release(lay: Layout, release: Path, python: str) -> Path:
    """The release's own sonopi wheel unpacked for the x86 side, so both architectures run the same code
    (the checkout may be edited while the gate runs); dependencies come from the x86 venv."""
    target = lay.work / "x86-release"
    shutil.rmtree(target, ignore_errors=True)
    wheel = next(release.glob("sonopi-*.whl"), None)
    if wheel is None:
        raise CheckError(f"{release}: no sonopi wheel")
    run([python, "-m", "zipfile", "-e", wheel, target], what=f"unpacking {wheel.name} for x86")
    where = run(
        [python, "-c", "import device; print(device.__file__)"], what="x86 import of the release", cwd=target, env=x86_env(target)
    ).stdout.strip()
    if not where.startswith(str(target)):
        raise CheckError(f"the x86 side imports device from {where}, not from the release's wheel in {target}")
    return target


def x86_env(source: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(source), "PYTHONDONTWRITEBYTECODE": "1"}


def render_flash_config(lay: Layout, python: str) -> Path:
    secrets = lay.work / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    for name in ("ca.crt", "device.crt", "device.key", "mqtt.password"):  # both [uplink] branches: TLS + password
        (secrets / name).write_text("emulation-only\n")
    out = lay.work / "device-flash.toml"
    run(
        [python, REPO / "deploy/render_config.py", "--device-id", DEVICE_ID, "--site", SITE, "--secrets", secrets, "--out", out],
        what="deploy/render_config.py",
    )
    return out


def config_check(lay: Layout, release: Path, config: Path) -> None:
    proc = run(
        [guest_python(release), "-m", "device", "config", "check", config],
        check=False,
        what="config check (emulated)",
        env=guest_env(lay),
        cwd=lay.work,
    )
    if proc.returncode != 0:
        raise CheckError(f"config check of the flash-rendered {config} failed on aarch64: {proc.stderr.strip()}")


def healthcheck(lay: Layout, config: Path, public_key: Path) -> str:
    """The release's own healthcheck.sh on the staged root (systemctl: a stand-in, the units are not run
    here): one real inference on the bundled test frame with the flash-rendered config, which requires
    bundles signed for /etc/sonopi/model-signing.pub — the guest opens that path in the sysroot."""
    shutil.copy2(config, lay.prefix / "etc/sonopi/device.toml")
    (lay.sysroot / "etc/sonopi").mkdir(parents=True, exist_ok=True)
    shutil.copy2(public_key, lay.sysroot / "etc/sonopi/model-signing.pub")
    current = lay.prefix / "opt/sonopi/current"
    env = {**guest_env(lay), "SONOPI_PREFIX": str(lay.prefix), "SONOPI_SYSTEMCTL": "true", "SONOPI_HEALTH_SETTLE_S": "0"}
    proc = run([current / "deploy/device/healthcheck.sh"], what="healthcheck.sh (emulated)", env=env, cwd=lay.work, timeout=600)
    return proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "passed"


def dataset_images(datasets: Path) -> list[Path]:
    busi = sorted((datasets / "busi").glob("*/*.png"))
    busbra = sorted((datasets / "bus-bra/images").glob("*.png"))
    return busi + busbra


def spread(items: list[Path], n: int) -> list[Path]:
    if n >= len(items):
        return items
    return [items[(i * len(items)) // n] for i in range(n)]


def choose_images(spec: str, datasets: Path, release: Path) -> list[Path]:
    """``all``: every BUSI + BUS-BRA image; N: N spread evenly over BUSI (each class) and BUS-BRA; a
    directory or a file listing paths. Without the datasets: the release's test frame, said loudly."""
    if spec not in ("all",) and not spec.isdigit():
        path = Path(spec)
        if path.is_dir():
            return sorted(p for p in path.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".dcm"))
        if path.is_file():
            return [Path(line.strip()) for line in path.read_text().splitlines() if line.strip()]
        raise CheckError(f"--images {spec}: not 'all', a number, a directory or a file listing images")
    everything = dataset_images(datasets)
    if not everything:
        log.warning(
            "!!! NO DATASETS under %s: comparing on the release's synthetic test frame only — this is NOT the issue's bar (>= 20 real images) !!!",
            datasets,
        )
        return [release / "test-frame.png"]
    if spec == "all":
        return everything
    n = int(spec)
    groups = [sorted((datasets / "busi" / c).glob("*.png")) for c in ("benign", "malignant", "normal")]
    groups.append(sorted((datasets / "bus-bra/images").glob("*.png")))
    groups = [g for g in groups if g]
    share = [n // (2 * max(1, len(groups) - 1))] * (len(groups) - 1) + [0]
    share[-1] = n - sum(share)
    return [p for g, k in zip(groups, share) for p in spread(g, k)]


def classify(
    cmd: list[str | Path], images: list[Path], *, what: str, env: dict[str, str] | None, cwd: Path, out: Path, batch: int = 400
) -> dict[str, dict]:
    """``classify --json`` on ``images`` (in batches), one JSON object per line; keyed by absolute path."""
    results: dict[str, dict] = {}
    with open(out, "w") as fh:
        for start in range(0, len(images), batch):
            chunk = [str(p.resolve()) for p in images[start : start + batch]]
            proc = run([*cmd, *chunk], what=what, env=env, cwd=cwd, timeout=36000)
            fh.write(proc.stdout)
            for line in proc.stdout.splitlines():
                if line.strip():
                    record = json.loads(line)
                    results[str(Path(record["path"]).resolve())] = record
            log.info("    %s: %d/%d images", what, min(start + batch, len(images)), len(images))
    return results


@dataclass
class Comparison:
    images: int = 0
    errors: list[str] = field(default_factory=list)
    label_flips: list[str] = field(default_factory=list)
    flag_flips: list[str] = field(default_factory=list)
    category_flips: list[str] = field(default_factory=list)
    outline_differences: list[str] = field(default_factory=list)  # the lesion outline, its size or descriptors, or the crop
    max_diff: float = 0.0
    max_diff_image: str = ""
    differing: int = 0

    def ok(self, tolerance: float) -> bool:
        flips = self.errors or self.label_flips or self.flag_flips or self.category_flips or self.outline_differences
        return not flips and self.max_diff <= tolerance

    def summary(self, tolerance: float) -> str:
        verdict = "PASS" if self.ok(tolerance) else "FAIL"
        return (
            f"check-aarch64: {verdict}: {self.images} images, x86 vs aarch64: {len(self.label_flips)} label flips, "
            f"{len(self.flag_flips)} inconclusive flips, {len(self.category_flips)} category flips, "
            f"{len(self.outline_differences)} with another outline or crop, {self.differing} with any probability difference, "
            f"max |dp| {self.max_diff:.6f} (tolerance {tolerance:g}){'; ' + str(len(self.errors)) + ' errors' if self.errors else ''}"
        )


def outline_difference(x86: dict, arm: dict) -> str | None:
    """Which of what the card draws besides the probabilities differ, compared exactly: the classifier's crop and
    the lesion's fields (found, box, contour, size, descriptors); None when all are the same."""
    differing = ["crop"] if x86.get("crop") != arm.get("crop") else []
    a, b = x86.get("lesion") or {}, arm.get("lesion") or {}
    differing += [f"lesion.{field}" for field in sorted(set(a) | set(b)) if a.get(field) != b.get(field)]
    return ", ".join(differing) or None


def compare(x86: dict[str, dict], arm: dict[str, dict], images: list[Path], report: Path) -> Comparison:
    cmp = Comparison()
    with open(report, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            [
                "image",
                "label_x86",
                "label_aarch64",
                "inconclusive_x86",
                "inconclusive_aarch64",
                "max_abs_diff",
                "p_malignant_x86",
                "p_malignant_aarch64",
                "category_x86",
                "category_aarch64",
                "outline_same",
            ]
        )
        for image in images:
            key = str(image.resolve())
            a, b = x86.get(key), arm.get(key)
            cmp.images += 1
            if a is None or b is None or "error" in a or "error" in b:
                cmp.errors.append(f"{key}: x86={a and a.get('error')} aarch64={b and b.get('error')}")
                continue
            if a["model"]["sha256"] != b["model"]["sha256"]:
                cmp.errors.append(f"{key}: different models ({a['model']['sha256'][:12]} vs {b['model']['sha256'][:12]})")
            diff = max(abs(a["probabilities"][k] - b["probabilities"][k]) for k in a["probabilities"])
            if diff > 0:
                cmp.differing += 1
            if diff > cmp.max_diff:
                cmp.max_diff, cmp.max_diff_image = diff, key
            if a.get("label") != b.get("label"):
                cmp.label_flips.append(
                    f"{key}: {a.get('label')} -> {b.get('label')} "
                    f"(p_malignant {a['probabilities'].get('malignant')} -> {b['probabilities'].get('malignant')})"
                )
            if a.get("inconclusive") != b.get("inconclusive"):
                cmp.flag_flips.append(f"{key}: inconclusive {a.get('inconclusive')} -> {b.get('inconclusive')}")
            if a.get("category") != b.get("category"):
                cmp.category_flips.append(f"{key}: category {a.get('category')} -> {b.get('category')}")
            outline = outline_difference(a, b)
            if outline:
                cmp.outline_differences.append(f"{key}: {outline} differ")
            writer.writerow(
                [
                    key,
                    a.get("label"),
                    b.get("label"),
                    a.get("inconclusive"),
                    b.get("inconclusive"),
                    f"{diff:.6f}",
                    a["probabilities"].get("malignant"),
                    b["probabilities"].get("malignant"),
                    a.get("category"),
                    b.get("category"),
                    outline is None,
                ]
            )
    return cmp


def emulated_device_config(lay: Layout, model: Path, broker: str, data: Path) -> Path:
    config = lay.work / "device-emulated.toml"
    config.write_text(
        f'[device]\nid = "{DEVICE_ID}"\nsite = "{SITE}"\ndata_dir = "{data}"\n'
        f'[model]\npath = "{model}"\nthreads = 2\npublic_key = "{lay.prefix / "etc/sonopi/model-signing.pub"}"\n'
        f'[uplink]\nenabled = true\nbroker = "{broker}"\ntls = false\nack_timeout_s = 5.0\nheartbeat_s = 5.0\n'
        f"reconnect_min_s = 0.2\nreconnect_max_s = 2.0\n"
    )
    return config


def run_once(lay: Layout, release: Path, config: Path, folder: Path) -> int:
    run(
        [guest_python(release), "-m", "device", "--config", config, "run", "--once", "--headless", "--source", f"folder:{folder}"],
        what="run --once --headless (emulated)",
        env=guest_env(lay),
        cwd=lay.work,
        timeout=3600,
    )
    return device_counts(config_store(config))[0]


def config_store(config: Path) -> Path:
    data = next(line.split("=", 1)[1].strip().strip('"') for line in config.read_text().splitlines() if line.startswith("data_dir"))
    return Path(data) / "results.sqlite"


def device_counts(store: Path) -> tuple[int, int]:
    """(results, acked) in a device store, read-only."""
    if not store.is_file():
        return 0, 0
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=10) as db:
        total, acked = db.execute("SELECT COUNT(*), COALESCE(SUM(delivery = 'acked'), 0) FROM results").fetchone()
    return int(total), int(acked)


def hub_count(db: Path) -> int:
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # the hub has not created its schema yet


def selftest(lay: Layout, release: Path, model: Path) -> str:
    helptext = run([guest_python(release), "-m", "device", "--help"], what="device --help (emulated)", env=guest_env(lay), cwd=lay.work).stdout
    if "selftest" not in helptext:
        return "SKIPPED: this release's CLI has no 'selftest' command (python -m device --help)"
    proc = run(
        [guest_python(release), "-m", "device", "selftest", "--model", model],
        what="selftest (emulated)",
        env=guest_env(lay),
        cwd=lay.work,
        timeout=1800,
        check=False,
    )
    print(proc.stdout, end="")
    if proc.returncode != 0:
        raise CheckError(f"selftest failed on aarch64 (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return "passed"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(cmd: list[str | Path], logfile: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    with open(logfile, "ab") as fh:
        return subprocess.Popen([str(c) for c in cmd], stdout=fh, stderr=fh, env=env, cwd=cwd)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_broker(lay: Layout, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = system_mosquitto()
    env = None
    if binary is None:
        binary = str(lay.host / "usr/sbin/mosquitto")
        env = {**os.environ, "LD_LIBRARY_PATH": str(lay.host / "usr/lib/x86_64-linux-gnu")}
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        ("user root\n" if os.geteuid() == 0 else "") + f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n"
    )
    proc = start([binary, "-c", conf], workdir / "mosquitto.log", env=env)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CheckError(f"mosquitto ({binary}) exited: {(workdir / 'mosquitto.log').read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    stop(proc)
    raise CheckError(f"mosquitto did not listen on 127.0.0.1:{port} within 10 s")


def uplink(lay: Layout, release: Path, config: Path, broker: str, workdir: Path, python: str, x86_src: Path, expected: int, timeout: float) -> int:
    """The x86 hub (the release's hub code) and the emulated device's uplink until the hub holds every
    result and the device has every one acked; returns the number acked."""
    hub_db = workdir / "hub.sqlite"
    (workdir / "hub.toml").write_text("")
    hub = start(
        [python, "-m", "hub", "serve", "--config", workdir / "hub.toml", "--db", hub_db, "--broker", broker],
        workdir / "hub.log",
        env=x86_env(x86_src),
        cwd=x86_src,
    )
    dev = start([guest_python(release), "-m", "device", "--config", config, "uplink"], workdir / "uplink.log", env=guest_env(lay), cwd=lay.work)
    store = config_store(config)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            total, acked = device_counts(store)
            if hub_count(hub_db) >= expected and acked >= expected:
                return acked
            for name, proc in (("hub", hub), ("uplink", dev)):
                if proc.poll() is not None:
                    raise CheckError(f"the {name} exited ({proc.returncode}): {(workdir / (name + '.log')).read_text()[-2000:]}")
            time.sleep(0.5)
        total, acked = device_counts(store)
        raise CheckError(
            f"uplink: after {timeout:.0f} s the hub holds {hub_count(hub_db)} and the device has "
            f"{acked} of {total} acked (expected {expected}); logs in {workdir}"
        )
    finally:
        stop(dev)
        stop(hub)


# --- the gate --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--images",
        default=os.environ.get("AARCH64_IMAGES") or str(DEFAULT_IMAGES),
        help="'all' (every BUSI + BUS-BRA image), a number (default %(default)s), a dir or a list file",
    )
    parser.add_argument(
        "--tolerance", type=float, default=0.0, help="largest accepted |probability difference| x86 vs aarch64 (default 0: identical)"
    )
    parser.add_argument("--datasets", type=Path, default=REPO.parent / "shared/datasets")
    parser.add_argument("--model", type=Path, default=REPO / "models/sonopi-lite0")
    parser.add_argument("--model-pubkey", type=Path, default=None)
    parser.add_argument("--wheels", type=Path, default=REPO / "build/wheels-aarch64-cp311")
    parser.add_argument("--root", type=Path, default=REPO / "build/aarch64", help="cache directory")
    parser.add_argument(
        "--work", type=Path, default=None, help="this run's outputs (default ROOT/work; emptied first): give concurrent runs their own"
    )
    parser.add_argument("--run-once-images", type=int, default=8, help="images in the run --once folder")
    parser.add_argument("--compare-only", action="store_true", help="only the classify comparison (long runs)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="check-aarch64: %(message)s", stream=sys.stderr)
    try:
        return gate(args)
    except (CheckError, DebError) as exc:
        print(f"check-aarch64: FAIL: {exc}", file=sys.stderr)
        return 1


def gate(args: argparse.Namespace) -> int:
    lay = Layout(args.root.resolve(), args.work.resolve() if args.work else None)
    lay.root.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    timer = Timer()
    started = time.monotonic()
    with timer.step("emulated Debian bookworm arm64 (sysroot, qemu-user)"):
        prepare_host_tools(lay)
        prepare_sysroot(lay)
        write_emulation_files(lay)
        shutil.rmtree(lay.work, ignore_errors=True)
        lay.work.mkdir(parents=True)
        log.info("guest: %s (qemu %s, -cpu %s)", check_interpreter(lay), lay.qemu.name, QEMU_CPU)
    with timer.step("release (fetch-wheels + build_release)"):
        model, pub = signed_model(lay, args.model.resolve(), args.model_pubkey)
        release = build_release(lay, model, pub, args.wheels.resolve(), python)
        log.info("release %s", release.name)
    with timer.step("install-release.sh + activate-release.sh in the emulated Python"):
        installed = install_release(lay, release, pub)
        prune_old_releases(lay, installed)
        check_installed(lay, installed)
    active_model = lay.prefix / "var/lib/sonopi/models/current"
    steps: list[str] = []
    failures: list[str] = []

    def attempt(name: str, action) -> None:  # type: ignore[no-untyped-def]
        """A failed device step is reported and fails the gate, but the other steps still run."""
        with timer.step(name):
            try:
                steps.append(f"{name}: {action()}")
            except CheckError as exc:
                failures.append(f"{name}: {exc}")
                steps.append(f"{name}: FAILED")

    if not args.compare_only:
        flash_config = render_flash_config(lay, python)
        attempt("config check (flash-rendered config)", lambda: config_check(lay, installed, flash_config) or "passed")
        attempt("healthcheck.sh", lambda: healthcheck(lay, flash_config, pub))
        attempt("selftest", lambda: selftest(lay, installed, active_model))
    images = choose_images(args.images, args.datasets, installed)
    x86_src = x86_release(lay, installed, python)
    with timer.step(f"classify --json, {len(images)} images, x86 then aarch64"):
        x86 = classify(
            [python, "-m", "device", "classify", "--json", "--model", active_model],
            images,
            what="x86 classify",
            env=x86_env(x86_src),
            cwd=x86_src,
            out=lay.work / "classify-x86.jsonl",
        )
        arm = classify(
            [guest_python(installed), "-m", "device", "classify", "--json", "--model", active_model],
            images,
            what="aarch64 classify",
            env=guest_env(lay),
            cwd=lay.work,
            out=lay.work / "classify-aarch64.jsonl",
        )
        cmp = compare(x86, arm, images, lay.work / "compare.csv")
    if not args.compare_only:
        attempt(
            "run --once --headless + uplink to Mosquitto and an x86 hub",
            lambda: device_session(lay, installed, active_model, images, args.run_once_images, python, x86_src),
        )
    for name, took in timer.steps:
        log.info("time: %-62s %7.1f s", name, took)
    log.info("time: %-62s %7.1f s", "total", time.monotonic() - started)
    for line in steps:
        print(f"check-aarch64: {line}")
    for line in (cmp.errors + cmp.label_flips + cmp.flag_flips + cmp.category_flips + cmp.outline_differences)[:40]:
        print(f"check-aarch64:   {line}")
    if cmp.max_diff_image:
        print(f"check-aarch64:   largest difference on {cmp.max_diff_image}")
    print(f"check-aarch64: per-image comparison in {lay.work / 'compare.csv'}")
    for line in failures:
        print(f"check-aarch64: FAIL: {line}")
    print(cmp.summary(args.tolerance))
    return 0 if cmp.ok(args.tolerance) and not failures else 1


def device_session(lay: Layout, installed: Path, model: Path, images: list[Path], n: int, python: str, x86_src: Path) -> str:
    session = lay.work / "session"
    folder = session / "frames"
    folder.mkdir(parents=True)
    for i, image in enumerate(spread(images, n)):
        shutil.copy2(image, folder / f"{i:03d}-{image.name}")
    broker_proc, broker = start_broker(lay, session)
    try:
        config = emulated_device_config(lay, model, broker, session / "device-data")
        stored = run_once(lay, installed, config, folder)
        expected = len(list(folder.iterdir()))
        if stored != expected:
            raise CheckError(f"run --once stored {stored} results for {expected} images in {folder}")
        acked = uplink(lay, installed, config, broker, session, python, x86_src, stored, timeout=300)
    finally:
        stop(broker_proc)
    return f"run --once --headless: {stored} results stored; uplink: {acked}/{stored} acked by the x86 hub via Mosquitto"


if __name__ == "__main__":
    sys.exit(main())
