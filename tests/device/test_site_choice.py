"""The active site bundle (device/site_choice.py) on a device set up as deployed: the configuration root-owned 0640
in a root-owned folder, the commands run in real ``python -m device`` processes as an unprivileged user owning
only the data dir; the shipped bundle and real TFLite.

Proves: ``site-bundle use`` records the site bundle in ``<data_dir>/site-bundle.json`` without writing the
configuration (which the app cannot write), ``classify --json`` (no ``--model``) then reports the site bundle's
identity, ``selftest`` says which bundle runs, ``--model`` ignores the record, ``site-bundle undo`` goes back to
the base's identity; a site bundle made from another base is refused by ``use`` and, recorded by hand, not
applied (the configured bundle runs, a warning names the file in the log and in ``selftest``); a corrupt record,
a record naming a missing bundle or a changed one likewise; with ``[model] public_key`` set an unsigned site
bundle is refused and a signed one applies.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.config import DEFAULT_TOML
from device.head import BaseIdentity, HeadSpec
from device.model.bundle import load_bundle, write_bundle
from device.model.signing import generate_keypair, load_private_key, sign_bundle
from device.site_choice import RECORD_NAME, SiteChoiceError, choose_bundle, read_choice
from tests.ui.test_ui_workflow import write_frames
from tests.unprivileged import NOBODY, make_traversable

REPO = Path(__file__).resolve().parents[2]
# Started as root, the process imports what the command needs, then drops to 'nobody' for good before it reads the
# configuration or a bundle (the interpreter lives under /root, which 'nobody' cannot reach).
_AS_APP = f"""
import os, sys
import device.cli, device.analysis, device.selftest, device.site_choice, device.model.runtime, device.sources.files
from device.model.runtime import load_interpreter_class
load_interpreter_class()  # the runtime the device will use (the first installed), not every fallback: TensorFlow is slow
if os.geteuid() == 0:
    os.setgroups([])
    os.setgid({NOBODY})
    os.setuid({NOBODY})
sys.exit(device.cli.main(sys.argv[1:]))
"""


def device_as_app(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``python -m device ARGS`` in its own process, as the app's unprivileged user."""
    return subprocess.run([sys.executable, "-c", _AS_APP, *map(str, args)], capture_output=True, text=True, timeout=180, cwd=REPO)


def classify_model(config: Path, image: Path, *extra: str | Path) -> tuple[dict, str]:
    done = device_as_app("classify", "--json", "--config", config, *extra, image)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])["model"], done.stderr


def make_site_bundle(base: Path, out: Path, suffix: str = "site-test", base_version: str | None = None) -> Path:
    """A site bundle of ``base`` (its own head copied as the refitted one): what site-adapt writes, minus the fit.
    ``base_version``: claim another base (same model file, another version)."""
    bundle = load_bundle(base)
    m = bundle.manifest
    assert m.cam is not None
    head = HeadSpec(
        weights=tuple(tuple(row) for row in m.cam.weights),
        bias=tuple(m.cam.bias),
        base=BaseIdentity(m.name, base_version or m.version, m.model_sha256),
        site={"signing": "unsigned-site"},
    )
    manifest = dataclasses.replace(m, version=f"{m.version}+{suffix}", head=head)
    seg_path = bundle.segmentation_path  # carried on, as site-adapt does
    segmentation = seg_path.read_bytes() if seg_path is not None else None
    write_bundle(out, bundle.model_path.read_bytes(), manifest, segmentation=segmentation)
    return out


@pytest.fixture()
def app_root() -> Iterator[Path]:
    """A folder the app user can reach: not under pytest's base temp dir, which every pytest session (there may be
    several on this machine) resets to 0700 as it starts."""
    root = Path(tempfile.mkdtemp(prefix="sonopi-deployed-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def deployed(app_root: Path, shipped_bundle_dir: Path):
    """(config file, data dir, site bundle, a frame): the configuration as deploy/flash.sh installs it."""
    data = app_root / "data"
    data.mkdir()
    site = make_site_bundle(shipped_bundle_dir, data / "teach" / "bundles" / "site-1")
    frames = app_root / "usb"
    write_frames(frames, count=1)
    etc = app_root / "etc"
    etc.mkdir()
    config = etc / "device.toml"
    text = DEFAULT_TOML.replace('path = "models/sonopi-lite0"', f'path = "{shipped_bundle_dir}"', 1)
    config.write_text(text.replace('data_dir = "var"', f'data_dir = "{data}"', 1).replace("threads = 2", "threads = 1", 1))
    lock(config, data, app_root)
    return config, data, site, next(frames.iterdir())


def lock(config: Path, data: Path, root: Path) -> None:
    make_traversable(root)
    if os.geteuid() == 0:
        os.chown(config, 0, NOBODY)
        for path in [data, *data.rglob("*")]:
            os.chown(path, NOBODY, NOBODY)
    config.chmod(0o640 if os.geteuid() == 0 else 0o440)
    config.parent.chmod(0o755 if os.geteuid() == 0 else 0o555)


def test_use_and_undo_from_the_cli_without_writing_the_configuration(deployed, shipped_bundle_dir: Path) -> None:
    config, data, site, frame = deployed
    text = config.read_bytes()
    base_id, _ = classify_model(config, frame)
    assert base_id["version"] == load_bundle(shipped_bundle_dir).manifest.version

    used = device_as_app("site-bundle", "use", site, "--config", config)
    assert used.returncode == 0, used.stderr
    assert config.read_bytes() == text and (data / RECORD_NAME).is_file()
    choice = read_choice(data)
    assert choice is not None and choice.path == site.resolve() and choice.base.version == base_id["version"]
    site_id, _ = classify_model(config, frame)
    assert {k: site_id[k] for k in ("name", "version", "sha256")} == load_bundle(site).identity
    assert site_id["version"] != base_id["version"]
    explicit, _ = classify_model(config, frame, "--model", shipped_bundle_dir)  # --model ignores the record
    assert explicit == base_id
    selftest = device_as_app("selftest", "--config", config)
    assert re.search(r"PASS +site-bundle", selftest.stdout) and site_id["version"] in selftest.stdout, selftest.stdout

    undone = device_as_app("site-bundle", "undo", "--config", config)
    assert undone.returncode == 0 and "back to the configured bundle" in undone.stdout, undone.stderr
    assert not (data / RECORD_NAME).exists() and config.read_bytes() == text
    assert classify_model(config, frame)[0] == base_id


def _hand_written(data: Path, site_dir: Path, base_dir: Path, **changes: object) -> None:
    """A record as the app user could write it by hand (``changes``: keys replaced)."""
    site_id = load_bundle(site_dir).identity if site_dir.is_dir() else {"name": "x", "version": "1", "sha256": "0" * 64}
    record = {"format": 1, "path": str(site_dir), "site": site_id, "base": load_bundle(base_dir).identity, "chosen_at": "2026-12-01T00:00:00Z"}
    record.update(changes)
    (data / RECORD_NAME).write_text(json.dumps(record))
    if os.geteuid() == 0:
        os.chown(data / RECORD_NAME, NOBODY, NOBODY)


def _falls_back(config: Path, frame: Path, base_id: dict, reason: str) -> None:
    model, stderr = classify_model(config, frame)
    assert model == base_id
    record = str(config.parents[1] / "data" / RECORD_NAME)
    assert "WARNING" in stderr and record in stderr and reason in stderr, stderr
    selftest = device_as_app("selftest", "--config", config)
    assert re.search(r"WARN +site-bundle", selftest.stdout) and reason in selftest.stdout, selftest.stdout
    shown = device_as_app("site-bundle", "show", "--config", config)
    assert shown.returncode == 1 and "NOT used" in shown.stdout and reason in shown.stdout


def test_a_site_bundle_of_another_base_is_refused_and_never_applied(deployed, shipped_bundle_dir: Path, app_root: Path) -> None:
    config, data, _, frame = deployed
    base_id, _ = classify_model(config, frame)
    other = make_site_bundle(shipped_bundle_dir, app_root / "other-site", "site-other", base_version="9.9.9")
    refused = device_as_app("site-bundle", "use", other, "--config", config)
    assert refused.returncode == 1 and "was made from sonopi-lite0 9.9.9" in refused.stderr, refused.stderr
    assert not (data / RECORD_NAME).exists()
    _hand_written(data, other, shipped_bundle_dir)
    _falls_back(config, frame, base_id, "was made from sonopi-lite0 9.9.9")
    # a record claiming another base, for a genuine site bundle: also refused (it must name the configured one)
    _hand_written(data, data / "teach" / "bundles" / "site-1", shipped_bundle_dir, base={"name": "other-model", "version": "1", "sha256": "0" * 64})
    _falls_back(config, frame, base_id, "records the base other-model 1")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "not valid JSON"),
        ('{"format": 1, "path": "x"}', "must have exactly the keys"),
        ("[]", "must be a JSON object"),
    ],
)
def test_a_corrupt_record_falls_back_to_the_configured_bundle(deployed, text: str, reason: str) -> None:
    config, data, _, frame = deployed
    base_id, _ = classify_model(config, frame)
    (data / RECORD_NAME).write_text(text)
    _falls_back(config, frame, base_id, reason)


def test_a_missing_or_changed_site_bundle_falls_back(deployed, shipped_bundle_dir: Path, app_root: Path) -> None:
    config, data, site, frame = deployed
    base_id, _ = classify_model(config, frame)
    _hand_written(data, app_root / "gone", shipped_bundle_dir, site=load_bundle(site).identity)
    _falls_back(config, frame, base_id, "not a directory")
    _hand_written(data, site, shipped_bundle_dir, site={**load_bundle(site).identity, "version": "earlier"})
    _falls_back(config, frame, base_id, "now holds")


def test_the_signature_requirement_still_applies(app_root: Path, shipped_bundle_dir: Path) -> None:
    """``[model] public_key`` set: an unsigned site bundle is refused by ``use`` and not applied when recorded by
    hand; the same site bundle signed with the release key applies."""
    private, public = generate_keypair(app_root / "keys")
    base = app_root / "base"
    shutil.copytree(shipped_bundle_dir, base)
    sign_bundle(base, load_private_key(private))
    data = app_root / "data"
    site = make_site_bundle(base, data / "site")
    config = app_root / "etc" / "device.toml"
    config.parent.mkdir()
    text = DEFAULT_TOML.replace('path = "models/sonopi-lite0"', f'path = "{base}"\npublic_key = "{public}"', 1)
    config.write_text(text.replace('data_dir = "var"', f'data_dir = "{data}"', 1).replace("threads = 2", "threads = 1", 1))
    public.parent.chmod(0o755)
    public.chmod(0o644)
    frames = app_root / "usb"
    write_frames(frames, count=1)
    frame = next(frames.iterdir())
    lock(config, data, app_root)
    base_id, _ = classify_model(config, frame)

    refused = device_as_app("site-bundle", "use", site, "--config", config)
    assert refused.returncode == 1 and "unsigned" in refused.stderr, refused.stderr
    assert not (data / RECORD_NAME).exists()
    _hand_written(data, site, base)
    _falls_back(config, frame, base_id, "unsigned")

    sign_bundle(site, load_private_key(private))
    model, stderr = classify_model(config, frame)
    assert model["version"] == load_bundle(site).manifest.version and "WARNING" not in stderr


def test_choose_bundle_in_process_names_the_record(deployed) -> None:
    """The same decision in-process (what the touchscreen's loader calls): the error type and the file named."""
    from device.config import load_config

    config_file, data, _, _ = deployed
    (data / RECORD_NAME).write_text("{")
    with pytest.raises(SiteChoiceError, match=str(data / RECORD_NAME)):
        read_choice(data)
    choice = choose_bundle(load_config(config_file))
    assert choice.site is None and choice.warning is not None and choice.bundle.manifest.head is None
