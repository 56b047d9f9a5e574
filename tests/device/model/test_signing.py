"""Ed25519 bundle signatures and the device's model store: tampering, wrong keys, rollback."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import pytest

from device import watchdog
from device.errors import BundleError
from device.model.bundle import InputSpec, Manifest, OutputSpec, write_bundle
from device.model.signing import (
    SIGNATURE_FILE,
    generate_keypair,
    load_private_key,
    load_public_key,
    sign_bundle,
    verify_bundle,
)
from device.model.signing import (
    main as signing_main,
)
from device.model.store import ModelStore
from device.model.store import main as store_main


def make_bundle(path: Path, version: str = "1.0.0", payload: bytes = b"TFL3-fake-model") -> Path:
    manifest = Manifest(
        name="sonopi-lite0",
        version=version,
        created="2026-01-01T00:00:00Z",
        labels=("benign", "malignant"),
        input=InputSpec(height=224, width=224),
        outputs=OutputSpec(scores="scores"),
        model_sha256="0" * 64,
    )
    write_bundle(path, payload + version.encode(), manifest)
    (path / "MODEL_CARD.md").write_text("card\n")
    return path


@pytest.fixture()
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return generate_keypair(tmp_path / "keys")


@pytest.fixture()
def signed(tmp_path: Path, keys: tuple[Path, Path]) -> Path:
    bundle = make_bundle(tmp_path / "bundle")
    sign_bundle(bundle, load_private_key(keys[0]))
    return bundle


def flip_byte(path: Path, offset: int = 5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_keygen_modes_and_no_overwrite(keys: tuple[Path, Path]) -> None:
    private, public = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PUBLIC KEY" in public.read_bytes()
    with pytest.raises(BundleError, match="refusing to overwrite"):
        generate_keypair(private.parent)


def test_signed_bundle_verifies(signed: Path, keys: tuple[Path, Path]) -> None:
    bundle = verify_bundle(signed, load_public_key(keys[1]))
    assert bundle.manifest.version == "1.0.0"
    doc = json.loads((signed / SIGNATURE_FILE).read_text())
    assert set(doc["files"]) == {"manifest.json", "model.tflite", "MODEL_CARD.md"}


@pytest.mark.parametrize("name", ["model.tflite", "manifest.json", "MODEL_CARD.md"])
def test_flipped_byte_is_refused(signed: Path, keys: tuple[Path, Path], name: str) -> None:
    flip_byte(signed / name, offset=3)
    with pytest.raises(BundleError, match=rf"{name}|not valid JSON|manifest"):
        verify_bundle(signed, load_public_key(keys[1]))


def test_tampered_model_message_names_file(signed: Path, keys: tuple[Path, Path]) -> None:
    flip_byte(signed / "model.tflite")
    with pytest.raises(BundleError, match=r"model.tflite was modified after signing"):
        verify_bundle(signed, load_public_key(keys[1]))


def test_missing_signature_wrong_key_added_file(signed: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    _, other_pub = generate_keypair(tmp_path / "other")
    with pytest.raises(BundleError, match="signed with another key"):
        verify_bundle(signed, load_public_key(other_pub))
    (signed / "extra.bin").write_bytes(b"x")
    with pytest.raises(BundleError, match="unsigned file"):
        verify_bundle(signed, load_public_key(keys[1]))
    (signed / "extra.bin").unlink()
    doc = json.loads((signed / SIGNATURE_FILE).read_text())
    doc["files"]["model.tflite"] = "f" * 64  # edit the signed list without the key
    (signed / SIGNATURE_FILE).write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="signature does not match"):
        verify_bundle(signed, load_public_key(keys[1]))
    (signed / SIGNATURE_FILE).unlink()
    with pytest.raises(BundleError, match="unsigned"):
        verify_bundle(signed, load_public_key(keys[1]))


def test_cli_sign_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert signing_main(["keygen", "--out", str(tmp_path / "k")]) == 0
    bundle = make_bundle(tmp_path / "b")
    assert signing_main(["verify", str(bundle), "--public-key", str(tmp_path / "k/model-signing.pub")]) == 1
    assert "unsigned" in capsys.readouterr().err
    assert signing_main(["sign", str(bundle), "--key", str(tmp_path / "k/model-signing.key")]) == 0
    assert signing_main(["verify", str(bundle), "--public-key", str(tmp_path / "k/model-signing.pub")]) == 0


# --- model store ------------------------------------------------------------------------------


def signed_version(tmp_path: Path, keys: tuple[Path, Path], version: str) -> Path:
    bundle = make_bundle(tmp_path / f"src-{version}", version=version)
    sign_bundle(bundle, load_private_key(keys[0]))
    return bundle


def test_store_install_rollback_and_refusal(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    store = ModelStore(tmp_path / "models", keys[1])
    v1 = signed_version(tmp_path, keys, "1.0.0")
    v2 = signed_version(tmp_path, keys, "2.0.0")
    assert store.install(v1).manifest.version == "1.0.0"
    first = store.current_id
    assert store.install(v1).manifest.version == "1.0.0"  # idempotent
    assert store.current_id == first and store.previous_id is None
    store.install(v2)
    assert store.active().manifest.version == "2.0.0"
    assert store.previous_id == first

    # tampered / unsigned / wrong-key bundles are refused and the active model stays
    bad = signed_version(tmp_path, keys, "3.0.0")
    flip_byte(bad / "model.tflite")
    with pytest.raises(BundleError, match="modified after signing"):
        store.install(bad)
    (bad / SIGNATURE_FILE).unlink()
    with pytest.raises(BundleError, match="unsigned"):
        store.install(bad)
    _, other_pub = generate_keypair(tmp_path / "other")
    with pytest.raises(BundleError, match="another key"):
        ModelStore(store.root, other_pub).install(v2)
    assert store.active().manifest.version == "2.0.0"
    assert not [p for p in store.root.iterdir() if p.name.startswith(".staging")]

    assert store.rollback() == first
    assert store.active().manifest.version == "1.0.0"
    assert os.readlink(store.root / "current").startswith("store/")  # relative: works under any prefix


def test_store_cli_keeps_previous_on_failure(tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "models"
    base = ["--root", str(root), "--public-key", str(keys[1])]
    v1 = signed_version(tmp_path, keys, "1.0.0")
    assert store_main([*base, "install", str(v1)]) == 0
    bad = signed_version(tmp_path, keys, "2.0.0")
    flip_byte(bad / "manifest.json", offset=20)
    assert store_main([*base, "install", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "refusing it" in err and "active model is unchanged" in err and "1.0.0" in err
    assert store_main([*base, "rollback"]) == 1  # nothing before v1
    assert ModelStore(root, keys[1]).active().manifest.version == "1.0.0"


# --- watchdog ---------------------------------------------------------------------------------


def test_watchdog_notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert watchdog.notify("WATCHDOG=1") is False
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert watchdog.notify("READY=1") is True
        assert watchdog.notify("WATCHDOG=1") is True
        assert server.recv(64) == b"READY=1"
        assert server.recv(64) == b"WATCHDOG=1"
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog.interval_s() == 10.0
