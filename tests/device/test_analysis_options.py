"""One door from the configuration to an analysis (device/analysis.py, ``AnalysisOptions.from_config``).

The same file under the same ``[source]`` settings (a manual ROI, auto-crop, ROI mode) is analysed the same way
by ``device classify`` and by ``device run`` — real processes, compared probability by probability — and
``device site-check`` scores it as ``classify`` does. Before the one door, ``classify`` ignored ``[source] roi``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from device.config import parse_config
from device.crop import Box
from device.demo import write_demo_frames
from device.store import ResultStore
from tests.device.test_cli import _config, _device

ROI = '[source]\nroi = [300, 140, 420, 380]\nroi_mode = "override"\n'


def _classify(config: Path, files: list[Path]) -> list[dict]:
    proc = _device("classify", "--config", str(config), "--json", *map(str, files))
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def test_classify_and_run_analyse_a_file_the_same_way_with_a_configured_roi(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    frames = write_demo_frames(tmp_path / "frames", count=3)
    config = _config(tmp_path, tiny_bundle_dir, ROI)
    proc = _device("run", "--config", str(config), "--source", f"folder:{tmp_path / 'frames'}", "--headless", "--once")
    assert proc.returncode == 0, proc.stderr
    with ResultStore(tmp_path / "data" / "results.sqlite") as store:
        stored = {Path(r.source).name: r for r in store.history(newest_first=False)}
    for output in _classify(config, frames):
        record = stored[Path(output["path"]).name]
        assert record.roi == (300, 140, 420, 380)
        for label, p in output["probabilities"].items():
            assert p == pytest.approx(record.probabilities[label], abs=1e-6), (output["path"], label)
    # and the ROI matters for these frames: without it, classify gives other probabilities
    (tmp_path / "plain").mkdir()
    plain = _classify(_config(tmp_path / "plain", tiny_bundle_dir), frames)
    with_roi = _classify(config, frames)
    assert any(abs(a["probabilities"][k] - b["probabilities"][k]) > 1e-4 for a, b in zip(plain, with_roi) for k in a["probabilities"])


def test_options_from_config_and_a_clinicians_roi() -> None:
    from device.analysis import AnalysisOptions

    config = parse_config({"source": {"roi": [10, 20, 300, 200], "roi_mode": "refine", "auto_crop": False, "dicom_frame": 2}})
    options = AnalysisOptions.from_config(config)
    assert options == AnalysisOptions(auto_crop=False, roi=Box(10, 20, 300, 200), roi_mode="refine", dicom_frame=2)
    drawn = Box(1, 2, 30, 40)
    # a drawn ROI is the close-up; the configured one stays the scan region's, which the close-up is checked against
    assert options.with_roi(drawn).close_up == drawn and options.with_roi(drawn).roi == options.roi
    assert options.with_roi(None) == options
    assert options.classify_kwargs(heatmap=True) == {
        "auto_crop": False,
        "roi": Box(10, 20, 300, 200),
        "roi_mode": "refine",
        "close_up": None,
        "heatmap": True,
    }
    assert options.with_roi(drawn).classify_kwargs()["close_up"] == drawn
