"""deploy/check_aarch64.py (make check-aarch64): the comparison (probabilities, labels, inconclusive flags, and
what the card draws beside them: the category, the crop, the lesion outline, its size and descriptors) and image
selection on their own, and —
when `make check-aarch64` has prepared build/aarch64 (a network download: Debian arm64 packages and
qemu-user-static) — the emulated Python itself: aarch64, bookworm's 3.11.2 / glibc 2.36, the
emulation-only Raspberry Pi 4 cpuinfo, and a Python that starts Python without binfmt."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from deploy import check_aarch64 as gate
from deploy.debpkg import parse_status

REPO = Path(__file__).resolve().parents[2]
LAYOUT = gate.Layout(REPO / "build/aarch64")
_prepared = (LAYOUT.sysroot / ".complete").is_file() and LAYOUT.qemu.is_file() and LAYOUT.python.is_file()
needs_emulator = pytest.mark.skipif(
    not _prepared, reason="build/aarch64 not prepared: run `make check-aarch64` once (downloads Debian arm64 packages)"
)


def result(label: str | None, p_malignant: float, inconclusive: bool = False, sha: str = "ab") -> dict:
    return {
        "label": label,
        "inconclusive": inconclusive,
        "model": {"sha256": sha},
        "probabilities": {"normal": 0.0, "benign": round(1 - p_malignant, 6), "malignant": p_malignant},
    }


def test_compare_counts_flips_and_the_largest_difference(tmp_path: Path) -> None:
    images = [tmp_path / f"{i}.png" for i in range(5)]
    key = [str(p.resolve()) for p in images]
    x86 = {
        key[0]: result("benign", 0.1),
        key[1]: result("benign", 0.0276),
        key[2]: result("malignant", 0.9),
        key[3]: result("benign", 0.2),
        key[4]: result("benign", 0.2),
    }
    arm = {
        key[0]: result("benign", 0.1),
        key[1]: result("malignant", 0.0311),
        key[2]: result(None, 0.9, True),
        key[3]: result("benign", 0.2, sha="cd"),
    }
    cmp = gate.compare(x86, arm, images, tmp_path / "cmp.csv")
    assert cmp.images == 5 and len(cmp.label_flips) == 2 and len(cmp.flag_flips) == 1
    assert len(cmp.errors) == 2  # a different model on one image, no aarch64 result for another
    assert cmp.max_diff == pytest.approx(0.0035) and cmp.max_diff_image == key[1]
    assert not cmp.ok(1.0)
    assert "FAIL: 5 images" in cmp.summary(0.0) and "2 label flips" in cmp.summary(0.0)
    assert len((tmp_path / "cmp.csv").read_text().splitlines()) == 1 + 4  # no row for the missing result


def test_identical_results_pass_only_within_the_tolerance(tmp_path: Path) -> None:
    images = [tmp_path / "a.png", tmp_path / "b.png"]
    x86 = {str(p.resolve()): result("benign", 0.1) for p in images}
    assert gate.compare(x86, dict(x86), images, tmp_path / "c.csv").ok(0.0)
    arm = {k: result("benign", 0.100001) for k in x86}
    cmp = gate.compare(x86, arm, images, tmp_path / "c.csv")
    assert not cmp.ok(0.0) and cmp.ok(1e-5) and cmp.differing == 2


def lesion(contour: list[list[int]] | None, shape: str = "oval") -> dict:
    found = contour is not None
    return {
        "found": found,
        "box": [1, 2, 30, 20] if found else None,
        "contour": contour,
        "area_px": 412.0 if found else None,
        "width_mm": None,
        "shape": {"value": shape, "shown": True} if found else None,
    }


def with_outline(record: dict, outline: dict, category: str = "low_suspicion", crop: list[int] | None = None) -> dict:
    return {**record, "category": category, "lesion": outline, "crop": crop or [0, 0, 256, 256]}


def test_the_category_the_crop_and_the_lesion_outline_must_match_too(tmp_path: Path) -> None:
    """Identical probabilities are not enough: the card also shows the category, the outline, its size and its
    descriptors, so a Pi that draws another outline (or none), calls another category or crops elsewhere fails."""
    images = [tmp_path / f"{i}.png" for i in range(6)]
    key = [str(p.resolve()) for p in images]
    same = result("benign", 0.02)
    outline = lesion([[1, 2], [30, 2], [30, 20]])
    x86 = {k: with_outline(same, outline) for k in key}
    arm = {
        key[0]: with_outline(same, outline),
        key[1]: with_outline(same, lesion([[1, 2], [31, 2], [30, 20]])),  # one contour point moved
        key[2]: with_outline(same, lesion(None)),  # no outline on the Pi
        key[3]: with_outline(same, lesion([[1, 2], [30, 2], [30, 20]], shape="irregular")),  # another descriptor
        key[4]: with_outline(same, outline, category="suspicious"),
        key[5]: with_outline(same, outline, crop=[0, 0, 255, 256]),
    }
    cmp = gate.compare(x86, arm, images, tmp_path / "cmp.csv")
    assert cmp.max_diff == 0.0 and not cmp.label_flips and not cmp.flag_flips
    assert len(cmp.category_flips) == 1 and key[4] in cmp.category_flips[0]
    assert sorted(d.split(":")[0] for d in cmp.outline_differences) == sorted([key[1], key[2], key[3], key[5]])
    assert any("contour" in d for d in cmp.outline_differences if d.startswith(key[1]))
    assert any("crop" in d for d in cmp.outline_differences if d.startswith(key[5]))
    assert not cmp.ok(1.0)
    assert "1 category flips" in cmp.summary(0.0) and "4 with another outline or crop" in cmp.summary(0.0)
    rows = (tmp_path / "cmp.csv").read_text().splitlines()
    assert "category_aarch64" in rows[0] and "outline_same" in rows[0] and len(rows) == 1 + 6
    assert gate.compare(x86, dict(x86), images, tmp_path / "same.csv").ok(0.0)


def test_a_release_without_categories_or_outlines_still_compares(tmp_path: Path) -> None:
    """An older release's classify --json has no category, crop or lesion on either side: nothing to flip."""
    images = [tmp_path / "a.png"]
    x86 = {str(images[0].resolve()): result("benign", 0.1)}
    cmp = gate.compare(x86, dict(x86), images, tmp_path / "c.csv")
    assert cmp.ok(0.0) and not cmp.category_flips and not cmp.outline_differences


def _datasets(root: Path) -> Path:
    for cls, n in (("benign", 30), ("malignant", 20), ("normal", 10)):
        (root / "busi" / cls).mkdir(parents=True)
        for i in range(n):
            (root / "busi" / cls / f"{cls} ({i}).png").write_bytes(b"")
    (root / "bus-bra/images").mkdir(parents=True)
    for i in range(50):
        (root / "bus-bra/images" / f"bus_{i:04d}-l.png").write_bytes(b"")
    return root


def test_image_selection(tmp_path: Path) -> None:
    data = _datasets(tmp_path / "datasets")
    release = tmp_path / "release"
    default = gate.choose_images("24", data, release)
    assert len(default) == 24 and len(set(default)) == 24
    assert sum("bus-bra" in str(p) for p in default) == 12
    assert {p.parent.name for p in default if "busi" in str(p)} == {"benign", "malignant", "normal"}
    assert len(gate.choose_images("all", data, release)) == 60 + 50
    assert gate.choose_images(str(data / "busi/normal"), data, release) == sorted((data / "busi/normal").glob("*.png"))
    listing = tmp_path / "list.txt"
    listing.write_text(f"{default[0]}\n{default[1]}\n")
    assert gate.choose_images(str(listing), data, release) == default[:2]
    with pytest.raises(gate.CheckError, match="not 'all', a number"):
        gate.choose_images(str(tmp_path / "nope"), data, release)


def test_without_datasets_the_test_frame_is_used_and_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    images = gate.choose_images("24", tmp_path / "none", tmp_path / "release")
    assert images == [tmp_path / "release/test-frame.png"]
    assert "NO DATASETS" in caplog.text


def test_dpkg_status_parsing() -> None:
    text = (
        "Package: python3.11\nStatus: install ok installed\nVersion: 3.11.2-6\nArchitecture: arm64\n"
        "Description: x\n continued\n\nPackage: python3.11-venv\nStatus: deinstall ok config-files\nVersion: 1\n\n"
        "Package: python3-distutils\nStatus: install ok installed\nVersion: 3.11.2-3\nArchitecture: all\n"
        "Provides: python3.11-distutils, python3.12-distutils (= 1)\n"
    )
    found = parse_status(text)
    assert sorted(found) == ["python3-distutils", "python3.11"]
    assert found["python3.11"].version == "3.11.2-6"
    assert found["python3-distutils"].provides == ("python3.11-distutils", "python3.12-distutils")


def guest(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``code`` in the emulated Python (the gate's wrapper and clean guest environment)."""
    return subprocess.run([str(LAYOUT.python), "-c", code], capture_output=True, text=True, timeout=timeout, env=gate.guest_env(LAYOUT), cwd=REPO)


@needs_emulator
def test_the_emulated_python_is_bookworm_arm64_and_sees_a_pi4() -> None:
    code = (
        "import platform, sys; print(platform.machine(), platform.python_version(), *platform.libc_ver()); "
        "print(open('/proc/cpuinfo').read().count('CPU part\\t: 0xd08')); print(sys.executable)"
    )
    proc = guest(code)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "aarch64 3.11.2 glibc 2.36"
    assert lines[1] == "4"  # the emulation-only Raspberry Pi 4 cpuinfo, not this host's
    assert lines[2] == str(LAYOUT.python)  # -0 "$0": sys.executable is the wrapper script
    assert "EMULATION" in (LAYOUT.sysroot / "proc/README.EMULATION-ONLY").read_text()


@needs_emulator
def test_the_emulated_python_can_start_python_without_binfmt() -> None:
    code = (
        "import subprocess, sys; print(subprocess.run([sys.executable, '-c', 'import platform; "
        "print(platform.machine())'], capture_output=True, text=True, check=True).stdout.strip())"
    )
    proc = guest(code, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "aarch64"


@needs_emulator
def test_the_host_python_packages_do_not_leak_into_the_guest() -> None:
    proc = guest("import yaml")
    assert proc.returncode != 0 and "No module named 'yaml'" in proc.stderr


_current = LAYOUT.prefix / "opt/sonopi/current"


@needs_emulator
@pytest.mark.skipif(not (_current / ".installed").is_file(), reason="no release installed in build/aarch64/device: run `make check-aarch64` once")
def test_litert_segfaults_under_qemu_without_the_pi_cpuinfo(tmp_path: Path) -> None:
    """Why the emulation-only cpuinfo exists: the same sysroot without it (the host's x86 cpuinfo shows)."""
    bare = tmp_path / "sysroot-without-cpuinfo"
    bare.mkdir()
    for entry in LAYOUT.sysroot.iterdir():
        if entry.name != "proc":
            (bare / entry.name).symlink_to(entry)
    release = _current.resolve()
    code = (
        f"from ai_edge_litert.interpreter import Interpreter; i = Interpreter(model_path='{release}/model/model.tflite', "
        "num_threads=2); i.allocate_tensors(); print('ok')"
    )
    outcomes = []
    for root in (bare, LAYOUT.sysroot):
        proc = subprocess.run(
            [
                str(LAYOUT.qemu),
                "-cpu",
                gate.QEMU_CPU,
                "-L",
                str(root),
                "-0",
                str(release / "venv/bin/python"),
                str(LAYOUT.sysroot / "usr/bin/python3.11"),
                "-c",
                code,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=gate.guest_env(LAYOUT),
            cwd=REPO,
        )
        outcomes.append((proc.returncode, proc.stdout.strip(), proc.stderr[-300:]))
    assert outcomes[0][0] != 0 and "Segmentation fault" in outcomes[0][2], outcomes[0]
    assert outcomes[1][:2] == (0, "ok"), outcomes[1]
