"""``python -m device site-check``: a site's biopsy-proven cases, the applied threshold's sensitivity and
specificity on them, and a proposed (never higher) site threshold."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from device.site_check import Case, Scored, SiteCheckError, check_site, read_cases


def _case_folder(folder: Path, levels: dict[str, list[int]]) -> Path:
    (folder / "images").mkdir(parents=True)
    rows = ["filename,label"]
    for label, values in levels.items():
        for i, level in enumerate(values):
            name = f"{label}-{i:02d}.png"
            rng = np.random.default_rng(i)
            Image.fromarray(np.clip(level + rng.normal(0, 10, (120, 160)), 0, 255).astype(np.uint8)).save(folder / "images" / name)
            rows.append(f"{name},{label}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_bad_case_folders_are_named(tmp_path: Path) -> None:
    with pytest.raises(SiteCheckError, match="no labels.csv"):
        read_cases(tmp_path)
    (tmp_path / "labels.csv").write_text("file,diagnosis\na.png,malignant\n")
    with pytest.raises(SiteCheckError, match="needs 'filename' and 'label' columns"):
        read_cases(tmp_path)
    (tmp_path / "labels.csv").write_text("filename,label\na.png,suspicious\n")
    with pytest.raises(SiteCheckError, match="line 2: label 'suspicious' is not malignant, benign or normal"):
        read_cases(tmp_path)
    (tmp_path / "labels.csv").write_text("filename,label\na.png,malignant\n")
    with pytest.raises(SiteCheckError, match=r"1 listed image\(s\) not found .* \['a.png'\]"):
        read_cases(tmp_path)


def test_the_proposed_threshold_keeps_sensitivity_and_is_never_above_the_validated_one() -> None:
    scores = {Path(f"m{i}"): s for i, s in enumerate(np.linspace(0.02, 0.9, 40))}
    scores |= {Path(f"b{i}"): s for i, s in enumerate(np.linspace(0.0, 0.3, 40))}
    cases = [Case(path, path.name.startswith("m")) for path in scores]
    report = check_site(cases, lambda path: Scored(float(scores[path]), False), applied=0.2, validated=0.2)
    malignant = np.array([s for p, s in scores.items() if p.name.startswith("m")])
    assert report.applied_sensitivity == pytest.approx(np.mean(malignant >= 0.2))
    assert report.proposed_threshold <= 0.2 and report.proposed_sensitivity >= 0.95
    assert report.config_line() == f'[model]\nmode = "balanced"\nmalignant_threshold = {report.proposed_threshold:.4f}'
    generous = check_site(cases, lambda path: Scored(float(scores[path]), False), applied=0.01, validated=0.01)
    assert generous.proposed_threshold == 0.01  # never above the bundle's threshold


def test_too_few_malignant_cases_are_refused() -> None:
    cases = [Case(Path(f"m{i}"), True) for i in range(19)] + [Case(Path("b"), False)]
    with pytest.raises(SiteCheckError, match="19 malignant and 1 other case"):
        check_site(cases, lambda path: Scored(0.5, False), applied=0.1, validated=0.1)


def test_site_check_command_on_the_device_model(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    """The tiny model's p(malignant) rises with brightness: malignant cases as dim as 150 fall under its 0.4."""
    cases = _case_folder(tmp_path / "cases", {"malignant": list(range(150, 250, 4)), "benign": list(range(40, 130, 6))})
    config = tmp_path / "device.toml"
    config.write_text(f'[device]\ndata_dir = "{tmp_path / "data"}"\n[model]\npath = "{tiny_bundle_dir}"\nthreads = 1\n')
    proc = subprocess.run(
        [sys.executable, "-m", "device", "site-check", str(cases), "--config", str(config)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "cases: 25 malignant, 15 benign/normal" in proc.stdout
    applied = float(re.search(r"applied threshold 0.4000 .*sensitivity ([0-9.]+)", proc.stdout).group(1))
    proposed, sensitivity = map(float, re.search(r"proposed threshold ([0-9.]+) .*: sensitivity ([0-9.]+)", proc.stdout).groups())
    assert applied < 1.0 and proposed < 0.4 and sensitivity >= 0.95
    assert f"malignant_threshold = {proposed:.4f}" in proc.stdout
