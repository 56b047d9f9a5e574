"""Issue 17, defect 9 (remainder): ``device run --once`` on a folder resumes where it stopped.

A real ``python -m device run --source folder:... --once`` (the tiny real TFLite bundle, a real SQLite store) is
SIGKILLed twice mid-run and then run to the end: every file of the folder ends with exactly one result (the
issue saw 368 results for 300 frames after 3 kills), and the rerun says how many it skipped. ``--rerun``
classifies the folder again on purpose. With no ``[model] public_key`` configured, ``device run`` warns loudly at
start that the bundle's signature is not checked. And (defect 8) a run over a folder with oversized inputs refuses
them before decoding and stays under the device's 250 MB RSS goal.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from device.demo import write_demo_frames
from device.store import ResultStore
from tests.mqtt_broker import REPO, wait_for

FRAMES = 60


def _config(tmp_path: Path, bundle: Path) -> Path:
    path = tmp_path / "device.toml"
    path.write_text(f'[device]\nid = "resume-dev"\nsite = "resume-site"\ndata_dir = "{tmp_path / "data"}"\n[model]\npath = "{bundle}"\nthreads = 1\n')
    return path


def _count(db: Path) -> int:
    if not db.exists():
        return 0
    with ResultStore(db) as store:
        return store.count()


def _sources(db: Path) -> Counter[str]:
    with ResultStore(db) as store:
        return Counter(Path(r.source).name for r in store.history(limit=None) if r.source)


def test_a_killed_run_once_resumes_without_duplicates(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    frames = write_demo_frames(tmp_path / "frames", count=FRAMES)
    config = _config(tmp_path, tiny_bundle_dir)
    db = tmp_path / "data" / "results.sqlite"
    args = [sys.executable, "-m", "device", "--config", str(config), "run", "--source", f"folder:{tmp_path / 'frames'}", "--headless", "--once"]
    for kill_after in (5, 20):
        proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: _count(db) >= kill_after or proc.poll() is not None, 120, f"{kill_after} results before the kill")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert _count(db) < FRAMES, "the run ended before the kill: the test proved nothing"
    stored_before = _count(db)
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    sources = _sources(db)
    assert sorted(sources) == sorted(p.name for p in frames), "every file classified"
    assert set(sources.values()) == {1}, f"files classified twice: {[n for n, c in sources.items() if c > 1]}"
    assert f"{stored_before} of" in done.stderr and "already stored" in done.stderr, done.stderr[-2000:]
    assert f"{FRAMES - stored_before} results stored" in done.stdout, done.stdout


def test_rerun_classifies_the_folder_again(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    write_demo_frames(tmp_path / "frames", count=3)
    config = _config(tmp_path, tiny_bundle_dir)
    args = [sys.executable, "-m", "device", "--config", str(config), "run", "--source", f"folder:{tmp_path / 'frames'}", "--headless", "--once"]
    for extra, total in (([], 3), ([], 3), (["--rerun"], 6)):
        done = subprocess.run(args + extra, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert _count(tmp_path / "data" / "results.sqlite") == total
        assert "MODEL SIGNATURE CHECK OFF" in done.stderr, "no [model] public_key: a loud warning at start"


# The process's own high-water mark (VmHWM: per address space, so it starts afresh at exec; ru_maxrss would
# carry the forking pytest process's size over).
_PEAK_RSS = """
import runpy, sys
sys.argv = ["device"] + sys.argv[1:]
try:
    runpy.run_module("device", run_name="__main__", alter_sys=True)
finally:
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(f"PEAK_RSS_KIB {hwm.split()[1]}", file=sys.stderr)
"""


def test_run_once_refuses_oversized_inputs_before_decoding_and_stays_under_250_mb(shipped_bundle_dir: Path, tmp_path: Path) -> None:
    """Issue 17, defect 8: memory limits decided from the header (rows x columns x bytes per pixel) before decoding.
    A folder with a 16-bit PNG just under the pixel limit (the issue: 1.2 GB) and a small RLE DICOM of a huge frame
    is run once with the shipped model: both are refused by name; a 16-bit PNG just under the memory limit, an 8-bit
    one (a demo frame's scan region scaled up: the outline model draws its lesion on a 5015 x 5015 crop, which
    took the old device to 295 MB) and a demo frame are classified, and the process's peak RSS stays under the device's 250 MB
    goal."""
    import numpy as np
    from PIL import Image

    from device.crop import detect_scan_region
    from device.imageio import MAX_DECODED_BYTES, decode_image_file
    from tests.dicom_factory import write_dicom

    folder = tmp_path / "frames"
    write_demo_frames(folder, count=1)
    side = 7000  # 49 MP: under MAX_PIXELS, but 98 MB of 16-bit pixels
    ramp = np.add.outer(np.arange(side, dtype=np.uint32), np.arange(side, dtype=np.uint32)) % 4096
    Image.fromarray(ramp.astype(np.uint16)).save(folder / "huge16.png")
    write_dicom(folder / "huge.dcm", np.full((1, side, side), 90, np.uint8), syntax="rle")  # a small file
    fits = int((MAX_DECODED_BYTES // 2) ** 0.5)  # a 16-bit frame just under the limit
    Image.fromarray(ramp[:fits, :fits].astype(np.uint16)).save(folder / "large16.png")
    # an 8-bit frame just under it: a demo frame's scan region scaled up, its lesion drawn by the outline model
    demo = decode_image_file(folder / "demo-000.png")
    region = detect_scan_region(demo)
    grey8 = int(MAX_DECODED_BYTES**0.5) - 1
    scan = Image.fromarray(demo[region.y : region.y + region.height, region.x : region.x + region.width]).convert("L")
    scan.resize((grey8, grey8), Image.Resampling.BILINEAR).save(folder / "large8.png")
    config = _config(tmp_path, shipped_bundle_dir)
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, "--config", str(config), "run", "--source", f"folder:{folder}", "--headless", "--once"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "huge16.png" in done.stderr and "huge.dcm" in done.stderr and "MiB" in done.stderr, done.stderr[-3000:]
    assert sorted(_sources(tmp_path / "data" / "results.sqlite")) == ["demo-000.png", "large16.png", "large8.png"]
    with ResultStore(tmp_path / "data" / "results.sqlite") as store:
        large8 = next(r for r in store.history(limit=None) if Path(r.source or "").name == "large8.png")
    assert large8.lesion is not None and large8.lesion.found, "the outline model drew the large frame's lesion (the memory it takes)"
    peak_mb = int(done.stderr.rsplit("PEAK_RSS_KIB ", 1)[1].split()[0]) / 1024
    assert peak_mb < 250, f"peak RSS {peak_mb:.0f} MB"
