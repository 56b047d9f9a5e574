"""systemd units: `systemd-analyze verify` clean for each, hardening as documented, exposure scores."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = sorted((REPO / "systemd").glob("*.service"))
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (systemd; .ci/run installs it)")


@pytest.fixture(scope="module")
def staged_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with the units in /etc/systemd/system, the system's own units, and the executables the
    units name (verify checks they exist) — the host's /opt is never touched."""
    root = tmp_path_factory.mktemp("root")
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(unit, root / "etc/systemd/system" / unit.name)
    for system_dir in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if Path(system_dir).is_dir():
            shutil.copytree(system_dir, root / system_dir.lstrip("/"), symlinks=True, dirs_exist_ok=True)
            break
    for exe in ("opt/sonopi/current/venv/bin/python", "opt/sonopi/firstboot/firstboot.sh"):
        path = root / exe
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return root


@pytest.mark.parametrize("unit", [u.name for u in UNITS])
def test_systemd_analyze_verify(staged_root: Path, unit: str) -> None:
    proc = subprocess.run([ANALYZE, f"--root={staged_root}", "verify", "--man=no", f"/etc/systemd/system/{unit}"], capture_output=True, text=True)
    # verify exits 0 on warnings (unknown keys, bad values): any output about our unit is a failure
    ours = [line for line in (proc.stdout + proc.stderr).splitlines() if "sonopi" in line]
    assert proc.returncode == 0 and not ours, proc.stdout + proc.stderr


@pytest.mark.parametrize("unit,limit", [("sonopi-ui.service", 2.0), ("sonopi-uplink.service", 2.0)])
def test_security_exposure(staged_root: Path, unit: str, limit: float) -> None:
    proc = subprocess.run(
        [ANALYZE, "security", "--offline=yes", f"--root={staged_root}", "--no-pager", f"/etc/systemd/system/{unit}"], capture_output=True, text=True
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout + proc.stderr)
    assert m, proc.stdout + proc.stderr
    assert float(m.group(1)) <= limit, proc.stdout
    documented = (REPO / "docs/deploy.md").read_text()
    assert f"{unit}: {m.group(1)}" in documented, f"docs/deploy.md should record the exposure score {m.group(1)}"


@pytest.mark.parametrize("unit", ["sonopi-ui.service", "sonopi-uplink.service"])
def test_service_units_have_the_required_settings(unit: str) -> None:
    text = (REPO / "systemd" / unit).read_text()
    for setting in (
        "Type=notify",
        "Restart=always",
        "WatchdogSec=",
        "User=sonopi",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/sonopi",
        "PrivateTmp=yes",
        "StandardOutput=journal",
        "DevicePolicy=closed",
    ):
        assert setting in text, f"{unit} lacks {setting}"
    assert text.count("ReadWritePaths=") == 1
