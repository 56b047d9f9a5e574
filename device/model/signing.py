"""Ed25519 signatures for model bundles.

A signed bundle carries ``signature.json`` beside ``manifest.json``::

    {"format": 1, "algorithm": "ed25519", "key_id": "<16 hex>",
     "files": {"manifest.json": "<sha256>", "model.tflite": "<sha256>", "report/x.png": "..."},
     "signature": "<base64 Ed25519 signature of the canonical JSON of the other four keys>"}

``files`` lists the sha256 of every file in the bundle (recursively, except signature.json), so a
flipped byte anywhere, an added file or a removed file is refused, not only a changed model.
Keys are PEM files: PKCS#8 private key (kept outside the repo, mode 0600) and
SubjectPublicKeyInfo public key (shipped to devices as /etc/sonopi/model-signing.pub).

CLI (workstation)::

    python -m device.model.signing keygen --out ~/.config/sonopi/keys
    python -m device.model.signing sign BUNDLE --key ~/.config/sonopi/keys/model-signing.key
    python -m device.model.signing verify BUNDLE --public-key model-signing.pub
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from device.errors import BundleError
from device.model.bundle import SIGNATURE_FILE, ModelBundle, load_bundle, sha256_file

log = logging.getLogger(__name__)

SIGNATURE_FORMAT = 1
PRIVATE_KEY_NAME = "model-signing.key"
PUBLIC_KEY_NAME = "model-signing.pub"


# --- keys -------------------------------------------------------------------------------------


def generate_keypair(out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write a new key pair into ``out_dir`` (private 0600); refuses to overwrite an existing key."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    private_path, public_path = out / PRIVATE_KEY_NAME, out / PUBLIC_KEY_NAME
    for path in (private_path, public_path):
        if path.exists():
            raise BundleError(f"{path}: already exists; refusing to overwrite a signing key")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    public_path.write_bytes(public_key_pem(key.public_key()))
    return private_path, public_path


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    file = Path(path)
    try:
        key = serialization.load_pem_private_key(file.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise BundleError(f"{file}: signing key not found (create one with `make keys`)") from exc
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{file}: not a PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{file}: not an Ed25519 private key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    file = Path(path)
    try:
        key = serialization.load_pem_public_key(file.read_bytes())
    except FileNotFoundError as exc:
        raise BundleError(f"{file}: model public key not found") from exc
    except ValueError as exc:
        raise BundleError(f"{file}: not a PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"{file}: not an Ed25519 public key")
    return key


# --- signing and verification -----------------------------------------------------------------


def file_digests(bundle_dir: str | os.PathLike[str]) -> dict[str, str]:
    """sha256 of every regular file under ``bundle_dir`` except the signature, by POSIX relative path."""
    root = Path(bundle_dir)
    digests: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == SIGNATURE_FILE or path.is_dir():
            continue
        if path.is_symlink() or not path.is_file():
            raise BundleError(f"model bundle {root}: {rel} is not a regular file (symlinks are not allowed)")
        digests[rel] = sha256_file(path)
    return digests


def _payload(doc: dict[str, Any]) -> bytes:
    body = {k: doc[k] for k in ("format", "algorithm", "key_id", "files")}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def sign_bundle(bundle_dir: str | os.PathLike[str], private_key: Ed25519PrivateKey) -> Path:
    """Validate the bundle (manifest + model sha256), then write ``signature.json`` covering every file."""
    root = Path(bundle_dir)
    load_bundle(root)
    doc: dict[str, Any] = {
        "format": SIGNATURE_FORMAT,
        "algorithm": "ed25519",
        "key_id": key_id(private_key.public_key()),
        "files": file_digests(root),
    }
    doc["signature"] = base64.b64encode(private_key.sign(_payload(doc))).decode("ascii")
    target = root / SIGNATURE_FILE
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return target


def verify_bundle(bundle_dir: str | os.PathLike[str], public_key: Ed25519PublicKey) -> ModelBundle:
    """Check signature and every file digest, then load the bundle. Any problem is a BundleError."""
    root = Path(bundle_dir)
    if not root.is_dir():
        raise BundleError(f"model bundle {root}: not a directory")
    sig_path = root / SIGNATURE_FILE
    if not sig_path.is_file():
        raise BundleError(f"model bundle {root}: unsigned ({SIGNATURE_FILE} is missing); refusing it")
    try:
        doc = json.loads(sig_path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        signature = base64.b64decode(doc["signature"], validate=True)
        files = doc["files"]
        if doc.get("format") != SIGNATURE_FORMAT or doc.get("algorithm") != "ed25519" or not isinstance(files, dict):
            raise ValueError(f"unsupported format/algorithm {doc.get('format')!r}/{doc.get('algorithm')!r}")
        payload = _payload(doc)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise BundleError(f"model bundle {root}: {SIGNATURE_FILE} is malformed ({exc}); refusing it") from exc
    expected_id = key_id(public_key)
    try:
        public_key.verify(signature, payload)
    except InvalidSignature as exc:
        signer = doc.get("key_id")
        why = "signed with another key" if signer != expected_id else "signature does not match its contents"
        raise BundleError(f"model bundle {root}: signature is invalid ({why}: bundle key {signer}, device key {expected_id}); refusing it") from exc
    actual = file_digests(root)
    for rel, digest in sorted(files.items()):
        if rel not in actual:
            raise BundleError(f"model bundle {root}: signed file {rel} is missing; refusing it")
        if actual[rel] != digest:
            raise BundleError(f"model bundle {root}: {rel} was modified after signing (sha256 mismatch); refusing it")
    extra = sorted(set(actual) - set(files))
    if extra:
        raise BundleError(f"model bundle {root}: unsigned file(s) added: {', '.join(extra)}; refusing it")
    return load_bundle(root)


def load_verified_bundle(bundle_dir: str | os.PathLike[str], public_key_path: str | os.PathLike[str] | None) -> ModelBundle:
    """What the device calls at start-up: verify against ``[model].public_key`` when set, else plain load."""
    if public_key_path is None:
        return load_bundle(bundle_dir)
    return verify_bundle(bundle_dir, load_public_key(public_key_path))


# --- CLI --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m device.model.signing", description="Ed25519 model bundle signing")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("keygen", help="create model-signing.key (0600) and model-signing.pub")
    p.add_argument("--out", required=True, type=Path)
    p = sub.add_parser("sign", help="sign a bundle directory")
    p.add_argument("bundle", type=Path)
    p.add_argument("--key", required=True, type=Path)
    p = sub.add_parser("verify", help="verify a bundle directory")
    p.add_argument("bundle", type=Path)
    p.add_argument("--public-key", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if args.cmd == "keygen":
            private_path, public_path = generate_keypair(args.out)
            print(f"private key: {private_path} (keep it off the repo and off devices)")
            print(f"public key:  {public_path} (ship to devices as /etc/sonopi/model-signing.pub)")
        elif args.cmd == "sign":
            target = sign_bundle(args.bundle, load_private_key(args.key))
            print(f"signed: {target}")
        else:
            bundle = verify_bundle(args.bundle, load_public_key(args.public_key))
            print(f"ok: {bundle.manifest.name} {bundle.manifest.version} ({args.bundle})")
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
