"""make flash checks that the base image's Python can make the release's venv (Debian ships venv's
ensurepip apart, in python3.11-venv): read from the image with debugfs; if it cannot, the matching
python3.11-venv .debs go on the card and first boot installs them (dpkg -i) before making the venv, or
the flash stops with a message naming the image's Python version and the package. Synthetic images as
in test_deploy_flash.py; .debs built here with dpkg-deb (no network)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.testsupport import PYTHON_VERSION, base_python, make_base_image, missing_tools
from tests.deploy.test_deploy_flash import dbg, flash_env, kit, make_flash, offsets  # noqa: F401  (kit: fixture)

REPO = Path(__file__).resolve().parents[2]
IMAGE_PY = REPO / "deploy/image.py"

_missing = missing_tools(("ssh-keygen", "openssl", "make", "dpkg-deb"))
pytestmark = pytest.mark.skipif(bool(_missing), reason=f"tools missing (installed by .ci/run): {', '.join(_missing)}")


def fake_deb(out_dir: Path, package: str, version: str, arch: str = "arm64") -> Path:
    """A minimal valid .deb (control file + one documentation file)."""
    tree = out_dir / f".{package}-{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: sonopi tests <t@example.org>\n"
        f"Description: stand-in for {package}\n"
    )
    (tree / f"usr/share/doc/{package}").mkdir(parents=True)
    (tree / f"usr/share/doc/{package}/README").write_text("test\n")
    deb = out_dir / f"{package}_{version.split(':')[-1]}_{arch}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)], check=True, capture_output=True)
    shutil.rmtree(tree)
    return deb


def python_venv(image: Path, out: Path, debs: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(IMAGE_PY), "python-venv", str(image), "--out", str(out), "--cache", str(out.parent / "apt")]
    if debs:
        cmd += ["--debs", str(debs)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def no_venv_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_base_image(tmp_path_factory.mktemp("novenv") / "base.img", python_venv=False)


@pytest.fixture(scope="module")
def venv_debs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("venv-debs")
    fake_deb(d, "python3.11-venv", PYTHON_VERSION)
    fake_deb(d, "python3-setuptools-whl", "66.1.1-1+deb12u1", "all")
    return d


def test_image_that_can_make_a_venv_needs_nothing(kit: dict[str, Path], tmp_path: Path) -> None:
    proc = python_venv(kit["base"], tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and not list((tmp_path / "out").glob("*.deb"))
    assert f"python3.11 {PYTHON_VERSION} can make a venv" in proc.stderr


def test_image_without_venv_takes_the_matching_debs(no_venv_image: Path, venv_debs: Path, tmp_path: Path) -> None:
    proc = python_venv(no_venv_image, tmp_path / "out", venv_debs)
    assert proc.returncode == 0, proc.stderr
    assert "ensurepip missing" in proc.stderr and f"python3.11-venv={PYTHON_VERSION}" in proc.stderr
    names = sorted(Path(line).name for line in proc.stdout.split())
    assert names == sorted(p.name for p in venv_debs.glob("*.deb"))
    assert all((tmp_path / "out" / n).is_file() for n in names)


def test_debs_for_another_python_version_are_refused(no_venv_image: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    fake_deb(wrong, "python3.11-venv", "3.11.2-6+deb12u9")
    proc = python_venv(no_venv_image, tmp_path / "out", wrong)
    assert proc.returncode == 1
    assert re.search(rf"python3.11-venv 3.11.2-6\+deb12u9 .*needs python3.11-venv={re.escape(PYTHON_VERSION)}", proc.stderr)
    assert "base.img" in proc.stderr or "VENV_DEBS" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = python_venv(no_venv_image, tmp_path / "out2", empty)
    assert proc.returncode == 1 and "no python3.11-venv .deb" in proc.stderr


def test_image_without_python_is_refused(tmp_path: Path) -> None:
    image = make_base_image(tmp_path / "nopython.img", python_venv=False)
    root = offsets(image)["root"]
    subprocess.run(["debugfs", "-w", "-R", "rm /var/lib/dpkg/status", f"{image}?offset={root}"], check=True, capture_output=True)
    subprocess.run(["debugfs", "-w", "-R", "rm /usr/bin/python3.11", f"{image}?offset={root}"], check=True, capture_output=True)
    proc = python_venv(image, tmp_path / "out")
    assert proc.returncode == 1 and "no python3.11" in proc.stderr and "nopython.img" in proc.stderr


def test_flash_refuses_an_image_without_venv_when_the_package_is_not_there(kit: dict[str, Path], no_venv_image: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "never.img"
    proc = make_flash(flash_env(kit, BASE=str(no_venv_image), OUT=str(out), VENV_DEBS=str(empty)))
    assert proc.returncode != 0
    assert "python3.11-venv" in proc.stderr and "cannot make the release's venv" in proc.stderr, proc.stderr
    assert not out.exists()


@pytest.fixture(scope="module")
def flashed_no_venv(kit: dict[str, Path], no_venv_image: Path, venv_debs: Path) -> Path:
    out = kit["dir"] / "novenv-out.img"
    proc = make_flash(flash_env(kit, BASE=str(no_venv_image), OUT=str(out), VENV_DEBS=str(venv_debs)))
    assert proc.returncode == 0, proc.stderr
    assert "first boot installs" in proc.stderr
    return out


def test_flash_puts_the_debs_on_the_card(flashed_no_venv: Path, venv_debs: Path) -> None:
    off = offsets(flashed_no_venv)["root"]
    listing = dbg(flashed_no_venv, off, "ls -p /opt/sonopi/firstboot/debs")
    for deb in venv_debs.glob("*.deb"):
        assert f"/{deb.name}/" in listing


@pytest.mark.skipif(os.geteuid() != 0, reason="first boot creates users in the staged root: needs root (CI is root)")
def test_first_boot_installs_the_debs_before_making_the_venv(flashed_no_venv: Path, tmp_path: Path) -> None:
    staged = tmp_path / "root"
    staged.mkdir()
    dbg(flashed_no_venv, offsets(flashed_no_venv)["root"], f"rdump / {staged}")
    calls = tmp_path / "dpkg.calls"
    stand_in = tmp_path / "dpkg"
    stand_in.write_text(  # records its arguments and whether any release venv existed when it ran
        f'#!/bin/sh\nvenv=$(ls -d "{staged}"/opt/sonopi/releases/*/venv 2>/dev/null | wc -l)\necho "venvs=$venv $*" >>"{calls}"\n'
    )
    stand_in.chmod(0o755)
    env = {**os.environ, "SONOPI_PREFIX": str(staged), "SONOPI_BASE_PYTHON": base_python(), "SONOPI_DPKG": str(stand_in)}
    proc = subprocess.run([str(staged / "opt/sonopi/firstboot/firstboot.sh")], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    lines = calls.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("venvs=0 ")
    assert f"--root={staged} -i " in lines[0] and f"python3.11-venv_{PYTHON_VERSION}_arm64.deb" in lines[0]
    assert (staged / "opt/sonopi/firstboot/debs/.installed").is_file()
    assert (staged / "opt/sonopi" / os.readlink(staged / "opt/sonopi/current") / ".installed").is_file()
