"""The site's patient ID format is configured in [ui] and validated once at start-up.

Proves that the default config gives the default format, that a site format (an MRN of 8 digits) reaches the
window's keyboard check, and that a bad pattern or length range is a start-up error naming the key and file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from device.config import load_config, parse_config
from device.errors import ConfigError


def test_default_and_site_formats() -> None:
    default = parse_config({}).ui.patient_id_format()
    assert default.problem("A12345") is None
    mrn = parse_config(
        {"ui": {"patient_id_pattern": "[0-9]{8}", "patient_id_min_length": 8, "patient_id_max_length": 8, "patient_id_example": "00012345"}}
    ).ui.patient_id_format()
    assert mrn.problem("00012345") is None
    assert mrn.problem("A12345") is not None


@pytest.mark.parametrize(
    "ui, words",
    [
        ('patient_id_pattern = "[A-Z"', "patient_id"),
        ("patient_id_min_length = 10\npatient_id_max_length = 4", "patient_id"),
    ],
)
def test_bad_format_names_key_and_file(tmp_path: Path, ui: str, words: str) -> None:
    path = tmp_path / "device.toml"
    path.write_text(f"[ui]\n{ui}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert words in str(err.value) and str(path) in str(err.value)


def test_the_window_takes_the_configured_format(qtbot, tmp_path: Path) -> None:
    from ui.main_window import MainWindow, Services
    from ui.workers import AnalysisService, FrameReader, default_opener

    config = parse_config(
        {
            "device": {"data_dir": str(tmp_path / "data")},
            "model": {"path": str(tmp_path / "no-model")},
            "source": {"spec": f"folder:{tmp_path}"},
            "uplink": {"enabled": False},
            "ui": {"patient_id_pattern": "[0-9]{8}", "patient_id_min_length": 8, "patient_id_max_length": 8},
        }
    )
    window = MainWindow(config, Services(FrameReader(config.source.spec, default_opener(config)), AnalysisService(config)), (800, 480))
    qtbot.addWidget(window)
    assert window.id_format.problem("00012345") is None and window.id_format.problem("AB12") is not None
