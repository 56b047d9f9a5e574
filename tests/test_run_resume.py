"""Issue 17, defect 9 (remainder): ``device run --once`` on a folder resumes where it stopped.

A real ``python -m device run --source folder:... --once`` (the tiny real TFLite bundle, a real SQLite store) is
SIGKILLed twice mid-run and then run to the end: every file of the folder ends with exactly one result (the
issue saw 368 results for 300 frames after 3 kills), and the rerun says how many it skipped. ``--rerun``
classifies the folder again on purpose. With no ``[model] public_key`` configured, ``device run`` warns loudly at
start that the bundle's signature is not checked.
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
    path.write_text(f'[device]\nid = "resume-dev"\nsite = "resume-site"\ndata_dir = "{tmp_path / "data"}"\n'
                    f'[model]\npath = "{bundle}"\nthreads = 1\n')
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
    args = [sys.executable, "-m", "device", "--config", str(config), "run", "--source",
            f"folder:{tmp_path / 'frames'}", "--headless", "--once"]
    for kill_after in (5, 20):
        proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: _count(db) >= kill_after or proc.poll() is not None, 120,
                     f"{kill_after} results before the kill")
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
    args = [sys.executable, "-m", "device", "--config", str(config), "run", "--source",
            f"folder:{tmp_path / 'frames'}", "--headless", "--once"]
    for extra, total in (([], 3), ([], 3), (["--rerun"], 6)):
        done = subprocess.run(args + extra, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert _count(tmp_path / "data" / "results.sqlite") == total
        assert "MODEL SIGNATURE CHECK OFF" in done.stderr, "no [model] public_key: a loud warning at start"
