"""The dependency rules of docs/architecture.md, checked on every import statement in the tree (top-level and
inside functions), so a new one that breaks them fails here instead of in a review.

* ``device`` (the appliance core) imports nothing of ``ui``, ``hub`` or ``model_build``, no Qt, and MQTT
  (paho) only in its network code, ``device/link/``;
* ``ui`` builds on ``device`` only (never ``hub`` or ``model_build``); Qt is imported nowhere else;
* ``hub`` takes from ``device`` only the link seam (``device.link``: contract, schemas, MQTT, corrections) and
  the small shared pieces listed below;
* ``model_build`` takes from ``device`` only the model seam (``device.model``: bundle, pixels, the runner), the
  pixel helpers and the rules it measures, and never ``ui``/``hub``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# the link seam; config (the MQTT connection section), errors and the clock are shared by both ends
HUB_MAY_USE_FROM_DEVICE = {"device.link", "device.errors", "device.config", "device.clock"}
MODEL_BUILD_MAY_USE_FROM_DEVICE = {
    "device.model",
    "device.imageio",
    "device.crop",
    "device.errors",
    # what the build measures with the device's own rules, so a figure in the report is the device's figure
    "device.selftest",
    "device.engine",
    "device.decision",
    "device.close_up",
    "device.head",
    "device.lesions",
    "device.lesion_shape",
    "device.spacing",
    "device.outline",
    "device.quality",  # the engine's quality gate, relaxed where a study scores probabilities, not decisions
}
DEVICE_NETWORK_CODE = ("device/link/",)


def _imports(package: str) -> Iterator[tuple[str, str]]:
    """(file relative to the repo, imported module) for every import in ``package``."""
    for path in sorted((REPO / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = path.relative_to(REPO).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield rel, alias.name
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield rel, node.module
                for alias in node.names:  # `from device import engine` imports device.engine
                    yield rel, f"{node.module}.{alias.name}"


def _top(module: str) -> str:
    return module.split(".")[0]


def _device_module(module: str) -> str | None:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "device" and len(parts) > 1 else None


@pytest.mark.parametrize("package", ["device", "ui", "hub", "model_build"])
def test_the_tree_is_parsed(package: str) -> None:
    assert any(True for _ in _imports(package)), f"no imports found in {package}/: the rule checks would be vacuous"


def test_device_imports_no_ui_hub_model_build_or_qt() -> None:
    bad = [(f, m) for f, m in _imports("device") if _top(m) in {"ui", "hub", "model_build", "PyQt5", "PyQt6", "PySide6"}]
    assert not bad, bad


def test_mqtt_only_in_the_devices_network_code() -> None:
    bad = [(f, m) for f, m in _imports("device") if _top(m) == "paho" and not f.startswith(DEVICE_NETWORK_CODE)]
    assert not bad, bad


def test_ui_builds_on_device_only_and_qt_stays_in_ui() -> None:
    assert not [(f, m) for f, m in _imports("ui") if _top(m) in {"hub", "model_build"}]
    for package in ("hub", "model_build", "device"):
        assert not [(f, m) for f, m in _imports(package) if _top(m) in {"PyQt5", "PyQt6", "PySide6"}], package


def test_hub_takes_only_the_contract_and_shared_pieces_from_device() -> None:
    used = {(f, d) for f, m in _imports("hub") if (d := _device_module(m))}
    assert not [(f, d) for f, d in used if d not in HUB_MAY_USE_FROM_DEVICE], sorted(used)
    assert not [(f, m) for f, m in _imports("hub") if _top(m) in {"ui", "model_build"}]


def test_model_build_takes_only_the_model_seam_from_device() -> None:
    used = {(f, d) for f, m in _imports("model_build") if (d := _device_module(m))}
    assert not [(f, d) for f, d in used if d not in MODEL_BUILD_MAY_USE_FROM_DEVICE], sorted(used)
    assert not [(f, m) for f, m in _imports("model_build") if _top(m) in {"ui", "hub"}]
