"""Device configuration: one TOML file, validated once; errors name the key and the file."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from device.config import DEFAULT_TOML, load_config, parse_config
from device.errors import ConfigError


def test_default_toml_is_complete_and_valid() -> None:
    config = parse_config(tomllib.loads(DEFAULT_TOML))
    assert config == parse_config({})  # the commented default file says exactly the built-in defaults


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[device]\nidd = 'x'\n", "unknown key 'device.idd'"),
        ("[nonsense]\n", "unknown key 'nonsense'"),
        ("[model]\nthreads = 0\n", "'model.threads'"),
        ("[device]\nid = 'a/b'\n", "'device.id'"),
        ("[uplink]\nbroker = 'nohostport'\n", "'uplink.broker'"),
        ("[source]\nroi = [0, 0, -5, 10]\n", "'source.roi'"),
        ("[ui]\npin = '12'\n", "'ui.pin'"),
        ("[model]\nmalignant_threshold = 0\n", "'model.malignant_threshold'"),
        ("[model]\nmalignant_threshold = 1.5\n", "'model.malignant_threshold'"),
        ("[uplink]\nheartbeat_s = 1e8\n", "'uplink.heartbeat_s'"),  # beyond the contract's interval_s bound
        ("this is not toml", "not valid TOML"),
    ],
)
def test_bad_config_names_key_and_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "device.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")


def test_cli_config_check_and_default(tmp_path: Path) -> None:
    default = subprocess.run([sys.executable, "-m", "device", "config", "default"], capture_output=True, text=True, check=True)
    good = tmp_path / "good.toml"
    good.write_text(default.stdout)
    ok = subprocess.run([sys.executable, "-m", "device", "config", "check", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[store]\nkeep_images_days = -1\n")
    failed = subprocess.run([sys.executable, "-m", "device", "config", "check", str(bad)], capture_output=True, text=True)
    assert failed.returncode == 1
    assert "store.keep_images_days" in failed.stderr and str(bad) in failed.stderr
