"""The active site bundle: the app-owned record of which site bundle (``device site-adapt``) the device runs
instead of the configured ``[model] path``.

The device configuration is root-owned and read-only to the app (deploy/flash.sh; docs/deploy.md): it holds
``[model] public_key``, which the app must never be able to change. So the clinic's choice — Settings › Model ›
*Teach this scanner* › *Use it*, or ``device site-bundle use DIR`` — is kept in ``<data_dir>/site-bundle.json``
(:data:`RECORD_NAME`), written atomically, removed by *Undo* (``device site-bundle undo``, or deleting the file).

The record can only *specialise* the configured bundle, never swap in another model: it is applied only when the
site bundle's manifest ``head.base`` names exactly the configured bundle (name, version and model sha256), the site
bundle still is the one recorded, and it passes the same ``[model] public_key`` check as the configured bundle.
Otherwise (bad JSON, a missing or changed bundle, another base, a refused signature) :func:`choose_bundle` logs a
warning naming the file and the reason and the configured bundle runs; the warning is also shown by
``device selftest`` and in Settings › Model.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.atomic_file import sync_dir, write_atomic
from device.clock import utc_now_iso
from device.config import DeviceConfig
from device.errors import SonopiError
from device.model.bundle import Manifest, ModelBundle
from device.model.signing import load_verified_bundle

log = logging.getLogger(__name__)

RECORD_NAME = "site-bundle.json"
RECORD_FORMAT = 1
_RECORD_KEYS = {"format", "path", "site", "base", "chosen_at"}
_IDENTITY_KEYS = {"name", "version", "sha256"}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class SiteChoiceError(SonopiError):
    """The site-bundle record cannot be read, or names a bundle that may not be used on this device."""

    code = "site_choice_invalid"


@dataclass(frozen=True)
class BundleIdentity:
    """A bundle as results carry it to the hub: name, version, the model file's sha256."""

    name: str
    version: str
    sha256: str

    @classmethod
    def of(cls, manifest: Manifest) -> BundleIdentity:
        return cls(manifest.name, manifest.version, manifest.model_sha256)

    def text(self) -> str:
        return f"{self.name} {self.version} (model {self.sha256[:12]}…)"

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


@dataclass(frozen=True)
class SiteChoice:
    """The record: the site bundle chosen, its identity, and the base it specialises."""

    path: Path
    site: BundleIdentity
    base: BundleIdentity
    chosen_at: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": RECORD_FORMAT,
            "path": str(self.path),
            "site": self.site.as_dict(),
            "base": self.base.as_dict(),
            "chosen_at": self.chosen_at,
        }


@dataclass(frozen=True)
class ModelChoice:
    """What :func:`choose_bundle` decided: ``bundle`` runs; ``site`` is the record applied (None: the configured
    bundle runs); ``warning`` says why a record present was not applied."""

    bundle: ModelBundle
    site: SiteChoice | None
    warning: str | None
    record: Path

    def text(self) -> str:
        if self.warning is not None:
            return f"site bundle NOT used: {self.warning}"
        if self.site is not None:
            return f"site bundle {self.site.site.text()} in use ({self.record}), made from the configured {self.site.base.text()}"
        return f"no site bundle chosen ({self.record} absent): the configured bundle runs"


def record_file(data_dir: Path) -> Path:
    return Path(data_dir) / RECORD_NAME


def _identity(value: Any, key: str, file: Path) -> BundleIdentity:
    if not isinstance(value, dict) or set(value) != _IDENTITY_KEYS:
        raise SiteChoiceError(f"{file}: '{key}' must be an object with exactly name, version, sha256")
    if not all(isinstance(value[k], str) and value[k].strip() for k in _IDENTITY_KEYS):
        raise SiteChoiceError(f"{file}: '{key}.name', '{key}.version' and '{key}.sha256' must be non-empty strings")
    if not _SHA256.match(value["sha256"]):
        raise SiteChoiceError(f"{file}: '{key}.sha256' must be a 64-character lower-case hex digest")
    return BundleIdentity(value["name"], value["version"], value["sha256"])


def parse_choice(data: Any, file: Path) -> SiteChoice:
    """A record's JSON, validated: SiteChoiceError names the file and the first problem."""
    if not isinstance(data, dict):
        raise SiteChoiceError(f"{file}: must be a JSON object")
    if set(data) != _RECORD_KEYS:
        raise SiteChoiceError(
            f"{file}: must have exactly the keys {', '.join(sorted(_RECORD_KEYS))} (has {', '.join(sorted(map(str, data))) or 'none'})"
        )
    if data["format"] != RECORD_FORMAT:
        raise SiteChoiceError(f"{file}: format {data['format']!r} is not {RECORD_FORMAT}")
    if not isinstance(data["path"], str) or not data["path"].strip():
        raise SiteChoiceError(f"{file}: 'path' must be a non-empty string (the site bundle's folder)")
    if not isinstance(data["chosen_at"], str):
        raise SiteChoiceError(f"{file}: 'chosen_at' must be a string (UTC time)")
    return SiteChoice(Path(data["path"]), _identity(data["site"], "site", file), _identity(data["base"], "base", file), data["chosen_at"])


def read_choice(data_dir: Path) -> SiteChoice | None:
    """The record in ``data_dir``, or None when there is none; SiteChoiceError when it is unreadable or invalid."""
    file = record_file(data_dir)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise SiteChoiceError(f"{file}: unreadable ({exc})") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SiteChoiceError(f"{file}: not valid JSON ({exc})") from exc
    return parse_choice(data, file)


def write_choice(data_dir: Path, choice: SiteChoice) -> Path:
    """Write the record to a temporary file in ``data_dir``, sync it and rename it over the record (a power cut
    leaves the old record or the new one)."""
    file = record_file(data_dir)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(file, (json.dumps(choice.as_dict(), indent=2) + "\n").encode("utf-8"))
    except OSError as exc:
        raise SiteChoiceError(f"{file}: cannot write the site-bundle record ({exc})") from exc
    return file


def clear_choice(data_dir: Path) -> bool:
    """Remove the record (back to the configured bundle); False when there was none."""
    file = record_file(data_dir)
    try:
        file.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise SiteChoiceError(f"{file}: cannot remove the site-bundle record ({exc})") from exc
    sync_dir(file.parent)
    return True


def check_site_bundle(path: Path, base: ModelBundle, public_key: Path | None, file: Path) -> ModelBundle:
    """Load ``path`` as the configured bundle would be loaded (``public_key`` when set) and check that it is a site
    bundle made from ``base`` exactly; SiteChoiceError names ``file``, the bundle and the reason otherwise."""
    try:
        site = load_verified_bundle(path, public_key)
    except SonopiError as exc:
        raise SiteChoiceError(f"{file}: site bundle {path} refused: {exc}") from exc
    head = site.manifest.head
    if head is None:
        raise SiteChoiceError(f"{file}: {path} ({BundleIdentity.of(site.manifest).text()}) is not a site bundle (its manifest has no 'head')")
    made_from = BundleIdentity(head.base.name, head.base.version, head.base.sha256)
    configured = BundleIdentity.of(base.manifest)
    if made_from != configured:
        raise SiteChoiceError(
            f"{file}: site bundle {path} was made from {made_from.text()}, but [model] path is "
            f"{configured.text()}; a site bundle only specialises the bundle it was made from"
        )
    return site


def applied_bundle(choice: SiteChoice, base: ModelBundle, public_key: Path | None, file: Path) -> ModelBundle:
    """The recorded site bundle, when it may run on top of ``base``; SiteChoiceError says why not."""
    configured = BundleIdentity.of(base.manifest)
    if choice.base != configured:
        raise SiteChoiceError(f"{file}: records the base {choice.base.text()}, but [model] path is {configured.text()}")
    site = check_site_bundle(choice.path, base, public_key, file)
    found = BundleIdentity.of(site.manifest)
    if found != choice.site:
        raise SiteChoiceError(f"{file}: records the site bundle {choice.site.text()}, but {choice.path} now holds {found.text()}")
    return site


def choose_bundle(config: DeviceConfig) -> ModelChoice:
    """The bundle the device runs without ``--model``: the configured one (its load errors propagate as before),
    or the recorded site bundle when it applies to it. A record that does not apply is a logged warning."""
    base = load_verified_bundle(config.model.path, config.model.public_key)
    file = record_file(config.device.data_dir)
    try:
        choice = read_choice(config.device.data_dir)
        if choice is None:
            return ModelChoice(base, None, None, file)
        site = applied_bundle(choice, base, config.model.public_key, file)
    except SiteChoiceError as exc:
        warning = f"{exc} — running the configured bundle {BundleIdentity.of(base.manifest).text()} instead"
        log.warning("%s", warning)
        return ModelChoice(base, None, warning, file)
    log.info("site bundle %s in use (%s)", choice.site.text(), file)
    return ModelChoice(site, choice, None, file)


def use_site_bundle(config: DeviceConfig, path: Path) -> SiteChoice:
    """Record ``path`` as the site bundle to run (*Use it*, ``device site-bundle use``), after checking it loads
    (signature when required) and was made from the configured bundle. Nothing is written when it does not."""
    base = load_verified_bundle(config.model.path, config.model.public_key)
    file = record_file(config.device.data_dir)
    site = check_site_bundle(Path(path).resolve(), base, config.model.public_key, file)
    choice = SiteChoice(site.path.resolve(), BundleIdentity.of(site.manifest), BundleIdentity.of(base.manifest), utc_now_iso())
    write_choice(config.device.data_dir, choice)
    log.info("site bundle %s chosen (%s)", choice.site.text(), file)
    return choice


def undo_site_bundle(config: DeviceConfig) -> bool:
    """Back to the configured bundle (*Undo*, ``device site-bundle undo``); False when no site bundle was chosen."""
    removed = clear_choice(config.device.data_dir)
    if removed:
        log.info("site bundle record %s removed: the configured bundle %s runs", record_file(config.device.data_dir), config.model.path)
    return removed
