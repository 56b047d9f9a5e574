"""The command line contract: run --once, clean shutdown on SIGTERM, history, export."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from device.demo import write_demo_frames
from device.store import ResultStore


def _config(tmp_path: Path, bundle: Path, extra: str = "") -> Path:
    path = tmp_path / "device.toml"
    path.write_text(
        f'[device]\nid = "cli-dev"\nsite = "cli-site"\ndata_dir = "{tmp_path / "data"}"\n[model]\npath = "{bundle}"\nthreads = 1\n' + extra
    )
    return path


def _device(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device", *args], capture_output=True, text=True, timeout=timeout)


def test_run_once_stores_every_frame(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    frames = write_demo_frames(tmp_path / "frames", count=4)
    (tmp_path / "frames" / "broken.png").write_bytes(b"nope")
    config = _config(tmp_path, tiny_bundle_dir)
    proc = _device("run", "--config", str(config), "--source", f"folder:{tmp_path / 'frames'}", "--headless", "--once")
    assert proc.returncode == 0, proc.stderr
    assert "4 results stored" in proc.stdout and "1 errors" in proc.stdout
    assert "broken.png" in proc.stderr
    with ResultStore(tmp_path / "data" / "results.sqlite") as store:
        records = store.history(newest_first=False)
    assert [Path(r.source).name for r in records] == [p.name for p in frames]
    assert all(r.device_id == "cli-dev" and r.site == "cli-site" and r.thumbnail for r in records)
    assert all(r.crop != (0, 0, 1280, 720) for r in records)  # the scan region was cropped out of the screen


def test_sigterm_stops_cleanly_after_storing(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    write_demo_frames(tmp_path / "frames", count=3)
    config = _config(tmp_path, tiny_bundle_dir, "[source]\nloop = true\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "device", "--config", str(config), "run", "--source", f"folder:{tmp_path / 'frames'}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    db = tmp_path / "data" / "results.sqlite"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if db.exists():
            with ResultStore(db) as store:
                if store.count() >= 5:
                    break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "received SIGTERM" in err and "results stored" in out
    with ResultStore(db) as store:
        assert store.integrity_ok() and store.count() >= 5


def test_history_and_export(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    write_demo_frames(tmp_path / "frames", count=2)
    config = _config(tmp_path, tiny_bundle_dir)
    assert _device("run", "--config", str(config), "--source", f"folder:{tmp_path / 'frames'}", "--once").returncode == 0
    history = _device("history", "--config", str(config), "--json")
    rows = [json.loads(line) for line in history.stdout.splitlines()]
    assert [r["seq"] for r in rows] == [2, 1] and rows[0]["delivery"] == "stored"
    assert _device("history", "--config", str(config), "--patient", "NOBODY").stdout == ""
    out = tmp_path / "export.csv"
    assert _device("export", "--config", str(config), "--csv", "--out", str(out)).returncode == 0
    assert len(out.read_text().splitlines()) == 3


def test_bad_model_and_bad_config_are_clear_errors(tmp_path: Path) -> None:
    proc = _device("classify", "--model", str(tmp_path / "nope"), str(tmp_path))
    assert proc.returncode == 1 and "model bundle" in proc.stderr and "not a directory" in proc.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[device]\nid = 7\n")
    proc = _device("history", "--config", str(bad))
    assert proc.returncode == 2 and "device.id" in proc.stderr


@pytest.mark.parametrize("spec", ["folder:/definitely/missing", "nonsense:x"])
def test_run_with_bad_source(tiny_bundle_dir: Path, tmp_path: Path, spec: str) -> None:
    proc = _device("run", "--config", str(_config(tmp_path, tiny_bundle_dir)), "--source", spec, "--once")
    assert proc.returncode == 1 and "error:" in proc.stderr


def test_configured_public_key_requires_a_signed_bundle(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    import shutil

    from device.model.signing import generate_keypair, load_private_key, sign_bundle

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_dir, bundle)
    _, public = generate_keypair(tmp_path / "keys")
    frame = write_demo_frames(tmp_path / "frames", count=1)[0]
    config = _config(tmp_path, bundle)
    config.write_text(config.read_text() + f'public_key = "{public}"\n')
    refused = _device("classify", "--config", str(config), "--json", str(frame))
    assert refused.returncode == 1 and "signature" in refused.stderr.lower() and str(bundle) in refused.stderr
    sign_bundle(bundle, load_private_key(tmp_path / "keys" / "model-signing.key"))
    accepted = _device("classify", "--config", str(config), "--json", str(frame))
    assert accepted.returncode == 0, accepted.stderr


def test_a_sites_malignant_threshold_reaches_the_result_and_a_higher_one_is_refused(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    frame = write_demo_frames(tmp_path / "frames", count=1)[0]
    config = _config(tmp_path, tiny_bundle_dir, "malignant_threshold = 0.05\n")
    result = _device("classify", "--config", str(config), "--json", str(frame))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[0])["thresholds"]["malignant"] == 0.05
    config.write_text(config.read_text().replace("0.05", "0.9"))
    refused = _device("classify", "--config", str(config), "--json", str(frame))
    assert refused.returncode == 2 and "configuration error" in refused.stderr and "may only lower it" in refused.stderr
