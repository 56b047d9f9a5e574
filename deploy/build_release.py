"""Assemble a release directory (+ a deterministic tar of it) from the working tree.

    python deploy/build_release.py --model models/sonopi-lite0 --public-key KEY.pub \
        --wheels build/wheels-aarch64-cp311 --out build/release

Layout of ``<out>/<id>/`` (installed on a device as /opt/sonopi/releases/<id>)::

    RELEASE                   the release id: <version>-<content hash>
    sonopi-<v>-py3-none-any.whl   device core + UI + uplink
    wheels/*.whl              every dependency for aarch64/cp311 (installed with --no-index --no-deps)
    model/                    the Ed25519-signed model bundle (checked here, again on the device)
    deploy/device/*.sh        install / activate / health check / first boot
    systemd/*.service
    test-frame.png            the health check's inference input

The id is a hash of the *inputs* (sources, wheels, model, scripts), so the same tree gives the same
id, the cached directory and tar are reused byte for byte, and a second deploy changes nothing.
The last line on stdout is the release directory.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from device.errors import BundleError  # noqa: E402  (after the sys.path line that makes the repository importable)
from device.model.signing import load_public_key, verify_bundle  # noqa: E402  (after the sys.path line that makes the repository importable)

log = logging.getLogger("build_release")
PACKAGES = ("device", "ui", "hub")
SKIP_PARTS = {"__pycache__", ".pytest_cache"}


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not SKIP_PARTS & set(p.relative_to(root).parts) and p.suffix != ".pyc")


def _digest_tree(h: hashlib._Hash, label: str, root: Path) -> None:
    for path in _files(root):
        h.update(f"{label}/{path.relative_to(root).as_posix()}\0".encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())


def _test_frame(path: Path) -> None:
    """A deterministic synthetic grey 'scan' (speckle around a dark oval) as PNG."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(20240601)
    yy, xx = np.mgrid[0:256, 0:320]
    img = 90 + 40 * rng.standard_normal((256, 320))
    img[((yy - 128) / 40) ** 2 + ((xx - 160) / 60) ** 2 < 1] *= 0.35
    Image.fromarray(np.clip(img, 0, 255).astype("uint8"), mode="L").save(path, optimize=False)


def _write_tar(src: Path, target: Path) -> None:
    """Deterministic tar: sorted names, mtime 0, numeric root owner — same input, same bytes."""
    tmp = target.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in [src, *sorted(src.rglob("*"))]:
            info = tar.gettarinfo(str(path), arcname=path.relative_to(src.parent).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
            info.pax_headers = {}
            if info.isfile():
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    os.replace(tmp, target)


def build(model: Path, public_key: Path, wheels: Path, out: Path, version: str | None = None) -> Path:
    key = load_public_key(public_key)
    verify_bundle(model, key)  # refuse an unsigned / tampered bundle before building anything
    wheel_files = sorted(wheels.glob("*.whl"))
    if not wheel_files:
        raise SystemExit(f"build_release: error: no wheels in {wheels} (run deploy/fetch-wheels.sh or set WHEELS=)")
    pyproject = REPO / "pyproject.toml"
    project_version = tomllib.loads(pyproject.read_text())["project"]["version"]

    h = hashlib.sha256()
    h.update(pyproject.read_bytes())
    for pkg in PACKAGES:
        if (REPO / pkg).is_dir():
            _digest_tree(h, pkg, REPO / pkg)
    for label, root in (("model", model), ("deploy", REPO / "deploy" / "device"), ("systemd", REPO / "systemd")):
        _digest_tree(h, label, root)
    for whl in wheel_files:
        h.update(f"wheels/{whl.name}\0".encode())
        h.update(hashlib.sha256(whl.read_bytes()).digest())
    release_id = version or f"{project_version}-{h.hexdigest()[:12]}"

    dest = out / release_id
    tar_path = out / f"sonopi-{release_id}.tar"
    if (dest / ".complete").is_file() and tar_path.is_file():
        log.info("release %s already built (%s)", release_id, dest)
        return dest
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{release_id}.", dir=out))
    try:
        rel = staging / release_id
        rel.mkdir()
        (rel / "RELEASE").write_text(release_id + "\n")
        # the wheel is built from a clean copy of the sources, so nothing is written into the tree
        src = staging / "src"
        src.mkdir()
        shutil.copy2(pyproject, src / "pyproject.toml")
        for pkg in PACKAGES:
            if (REPO / pkg).is_dir():
                shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        built = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--disable-pip-version-check",
                "-w",
                str(rel),
                str(src),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"},
        )
        if built.returncode != 0:
            raise SystemExit(f"build_release: error: building the sonopi wheel failed:\n{built.stderr}")
        (rel / "wheels").mkdir()
        for whl in wheel_files:
            shutil.copy2(whl, rel / "wheels" / whl.name)
        shutil.copytree(model, rel / "model", ignore=shutil.ignore_patterns("__pycache__"))
        verify_bundle(rel / "model", key)
        shutil.copytree(REPO / "deploy" / "device", rel / "deploy" / "device", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(REPO / "systemd", rel / "systemd")
        if (REPO / "docs" / "deploy.md").is_file():
            (rel / "docs").mkdir()
            shutil.copy2(REPO / "docs" / "deploy.md", rel / "docs" / "deploy.md")
        _test_frame(rel / "test-frame.png")
        if dest.exists():
            shutil.rmtree(dest)
        _write_tar(rel, staging / tar_path.name)
        os.replace(staging / tar_path.name, tar_path)
        os.rename(rel, dest)
        (dest / ".complete").touch()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("built release %s in %s", release_id, dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--public-key", type=Path, required=True)
    parser.add_argument("--wheels", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "release")
    parser.add_argument("--version", help="release id override (default: <version>-<content hash>)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="build_release: %(message)s", stream=sys.stderr)
    try:
        dest = build(args.model, args.public_key, args.wheels, args.out, args.version)
    except BundleError as exc:
        print(f"build_release: error: {exc}", file=sys.stderr)
        return 1
    print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
