"""``python -m device selftest``: the one-minute check a developer runs on a freshly flashed Pi.

Proves, against the real CLI process and a real TFLite interpreter, that a bundle with a recorded
reference passes bit for bit on the machine that recorded it, that a tampered reference score or input
checksum fails loudly (exit 1, naming what differs), that an old bundle without a reference warns
without failing, that a missing model fails, and how the CPU line reads a Raspberry Pi's cpuinfo.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from device import selftest
from device.selftest import Status, check_cpu, check_preprocessing, record_reference

REPO = Path(__file__).resolve().parents[2]

PI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU part\t: 0xd08

processor\t: 1
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid

Revision\t: c03114
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""


def _selftest(bundle: Path, tmp_path: Path, public_key: Path | None = None) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "device.toml"
    key = f'[model]\npublic_key = "{public_key}"\n' if public_key else ""
    config.write_text(f'[device]\ndata_dir = "{tmp_path / "var"}"\n{key}')
    return subprocess.run(
        [sys.executable, "-m", "device", "--config", str(config), "selftest", "--model", str(bundle)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )


@pytest.fixture()
def referenced_bundle(tiny_bundle_dir: Path, tmp_path: Path) -> Path:
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_dir, bundle)
    record_reference(bundle)
    return bundle


def _tamper(bundle: Path, key: str, value) -> None:
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    data["reference"][key] = value
    path.write_text(json.dumps(data))


def test_a_recorded_reference_passes_bit_for_bit(referenced_bundle: Path, tmp_path: Path) -> None:
    proc = _selftest(referenced_bundle, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert "PASS  preprocessing checksum" in proc.stdout
    assert "PASS  reference     input tensor and scores bit-identical" in proc.stdout
    assert proc.stdout.rstrip().endswith("selftest: PASS")


def test_an_unchecked_signature_is_a_warning_and_a_verified_one_passes(referenced_bundle: Path, tmp_path: Path) -> None:
    from device.model.signing import generate_keypair, load_private_key, sign_bundle

    proc = _selftest(referenced_bundle, tmp_path)
    assert "WARN  model" in proc.stdout and "SIGNATURE NOT CHECKED" in proc.stdout
    private, public = generate_keypair(tmp_path / "keys")
    sign_bundle(referenced_bundle, load_private_key(private))
    proc = _selftest(referenced_bundle, tmp_path, public)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert "PASS  model" in proc.stdout and "signature verified" in proc.stdout


def test_a_different_score_fails_and_says_so(referenced_bundle: Path, tmp_path: Path) -> None:
    scores = json.loads((referenced_bundle / "manifest.json").read_text())["reference"]["scores"]
    _tamper(referenced_bundle, "scores", [s + 0.25 for s in scores])
    proc = _selftest(referenced_bundle, tmp_path)
    assert proc.returncode == 1
    assert "FAIL  reference     input identical but scores differ by 0.25" in proc.stdout
    assert "selftest: FAIL (reference)" in proc.stdout


def test_a_different_input_tensor_fails(referenced_bundle: Path, tmp_path: Path) -> None:
    _tamper(referenced_bundle, "input_sha256", "0" * 64)
    proc = _selftest(referenced_bundle, tmp_path)
    assert proc.returncode == 1 and "the prepared input tensor differs from the workstation's" in proc.stdout


def test_a_replaced_reference_frame_fails(referenced_bundle: Path, tmp_path: Path) -> None:
    (referenced_bundle / "reference" / "frame.png").write_bytes(b"not the frame")
    proc = _selftest(referenced_bundle, tmp_path)
    assert proc.returncode == 1 and "reference frame's sha256 does not match" in proc.stdout


def test_a_bundle_without_reference_warns_but_passes(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    proc = _selftest(tiny_bundle_dir, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert "WARN  reference     model tiny" in proc.stdout and "has no reference frame" in proc.stdout


def test_a_missing_model_fails(tmp_path: Path) -> None:
    proc = _selftest(tmp_path / "no-such-bundle", tmp_path)
    assert proc.returncode == 1 and "FAIL  model" in proc.stdout and "no-such-bundle" in proc.stdout


def test_a_changed_checksum_fails_with_both_values() -> None:
    result = check_preprocessing(expected="f" * 64)
    assert result.status == Status.FAIL and "ffffffffffffffff" in result.detail


def test_cpu_line_on_a_raspberry_pi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(PI4_CPUINFO)
    monkeypatch.setattr(selftest.platform, "machine", lambda: "aarch64")
    result = check_cpu(cpuinfo)
    assert result.status == Status.PASS and result.detail == "aarch64, Raspberry Pi 4 Model B Rev 1.4, 2 core(s)"
    cpuinfo.write_text(PI4_CPUINFO.replace(" asimd", ""))
    assert check_cpu(cpuinfo).status == Status.FAIL
    assert check_cpu(tmp_path / "absent").status == Status.WARN
