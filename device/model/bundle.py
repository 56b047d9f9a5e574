"""The model bundle: the one definition of the seam between ``model_build/`` and the device.

A bundle is a directory::

    model.tflite     the int8 TFLite model
    segmentation.tflite  optional (format 4): the lesion-outline model named by the manifest's ``segmentation``
    manifest.json    a :class:`Manifest` (format documented in docs/model-bundle.md)
    report/          optional: metrics, plots, split (written by model_build)
    MODEL_CARD.md    optional: intended use, data, metrics, failure modes

``write_bundle`` (used by model_build and by tests) and ``load_bundle`` (used by the
device) share the dataclasses below, so both sides validate the same way. Loading
verifies the sha256 of ``model.tflite`` (and of the segmentation model) and refuses an unknown format version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

from device.atomic_file import write_atomic
from device.decision import (
    DEFAULT_MODE,
    IMPLICIT_LESION_THRESHOLD,
    IMPLICIT_MALIGNANT_THRESHOLD,
    MALIGNANT,
    MODE_ORDER,
    NORMAL,
    Category,
    Mode,
)
from device.errors import BundleError
from device.head import HeadSpec, head_to_dict, parse_head, validate_head

FORMAT_VERSION = 3  # what write_bundle writes for a bundle without a segmentation model
SEGMENTATION_FORMAT_VERSION = 4  # what it writes for one with: software that predates it refuses it by version
SEGMENTATION_REFERENCE_FORMAT_VERSION = 5  # what it writes when the segmentation section has a selftest reference
DESCRIPTORS_FORMAT_VERSION = 6  # what it writes when the segmentation section has its descriptors' display rule
# 1: before input.resampling existed (its bundles resample with OpenCV); 2: before the decision block;
# 3: before the segmentation model; 4: before the segmentation model's reference (segmentation.reference);
# 5: before the descriptors measured on the segmentation model's own outlines (segmentation.descriptors)
READABLE_FORMAT_VERSIONS = (1, 2, 3, 4, 5, 6)
DESCRIPTOR_NAMES = ("orientation", "shape", "margin")  # device.lesion_shape's descriptors, in the order reported
MODEL_FILE = "model.tflite"
SEGMENTATION_FILE = "segmentation.tflite"  # the name model_build segment writes and write_bundle uses
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "signature.json"  # written by device.model.signing; its presence makes a bundle read-only here

INPUT_DTYPES = ("uint8", "int8", "float32")
COLOR_MODES = ("grey3", "grey1")  # grey replicated to 3 channels, or a single channel
RESIZE_POLICIES = ("letterbox", "stretch")  # letterbox keeps the aspect ratio (lesion shape)
OUTPUT_KINDS = ("logits", "probabilities")


class Resampling(StrEnum):
    """How a frame is resized to the model's input (``input.resampling``; device.model.preprocess applies it)."""

    EXACT = "exact"  # device.model.resample: integer area/linear filter, the same pixels on every platform
    OPENCV = "opencv"  # cv2.resize INTER_AREA/INTER_LINEAR: format-1 bundles; differs between x86 and aarch64


@dataclass(frozen=True)
class Normalization:
    """How pixels are scaled: ``x' = (x - mean) / scale``. ``in_model`` means the model does it itself
    and the device feeds raw 0..255 pixels."""

    mean: float = 127.0
    scale: float = 128.0
    in_model: bool = True


@dataclass(frozen=True)
class InputSpec:
    height: int
    width: int
    dtype: str = "uint8"
    color: str = "grey3"
    resize: str = "letterbox"
    normalization: Normalization = field(default_factory=Normalization)
    resampling: str = Resampling.EXACT.value  # a format-1 manifest has none: it reads as "opencv"

    @property
    def channels(self) -> int:
        return 3 if self.color == "grey3" else 1


@dataclass(frozen=True)
class OutputSpec:
    """Output tensor roles, by TFLite tensor name."""

    scores: str  # the class scores tensor, shape [1, n_labels]
    scores_kind: str = "logits"  # "logits" (temperature applies before softmax) or "probabilities"
    cam_features: str | None = None  # optional last conv feature map [1, h, w, C] for heatmaps


@dataclass(frozen=True)
class CamSpec:
    """Classifier weights for class-activation maps: ``cam_k = sum_c features[..., c] * weights[c][k]``."""

    weights: tuple[tuple[float, ...], ...]  # [C][n_labels]
    bias: tuple[float, ...]  # [n_labels]


@dataclass(frozen=True)
class QualitySpec:
    """Model-specific limits for the low-confidence part of the quality gate."""

    min_confidence: float = 0.5  # max probability below this -> inconclusive
    max_entropy: float | None = None  # normalised entropy (0..1) above this -> inconclusive


@dataclass(frozen=True)
class ReferenceSpec:
    """A test frame inside the bundle and what the model computes on it, for ``device selftest``.

    ``input_sha256`` pins the prepared input tensor (crop + resampling + channels): a platform or
    library that changes one pixel fails. ``scores`` are the scores tensor's values on that input
    (dequantized), as the workstation's interpreter computed them."""

    frame: str  # POSIX path inside the bundle, e.g. "reference/frame.png"
    frame_sha256: str
    input_sha256: str
    scores: tuple[float, ...]


@dataclass(frozen=True)
class SegmentationOutputs:
    """The segmentation model's output tensors, by TFLite tensor name."""

    mask: str  # lesion probability per pixel of the model input, [1, h, w, 1] (dequantized, after the sigmoid)
    lesion_logit: str  # a lesion / no-lesion logit [1, 1] (trained beside the mask; not used for the outline)


@dataclass(frozen=True)
class MaskSpec:
    """How the mask becomes an outline: the largest region of probability >= ``threshold``, none when it covers
    fewer than ``min_region_px`` pixels of the model input (the rule ``model_build segment`` scored)."""

    threshold: float = 0.5
    min_region_px: int = 1


@dataclass(frozen=True)
class SegmentationReference:
    """What the segmentation model computes on the bundle's reference frame (``segmentation.reference``, format 5),
    recorded at pack time by the device's own runner, for ``device selftest`` (device/selftest.py).

    ``input_sha256`` pins the segmentation model's input tensor (exact: a changed pixel fails); ``mask_sha256`` the
    mask output (dequantized float32) bit for bit. When the mask is not bit-identical, ``mask_mean`` (mean lesion
    probability over the model input), ``mask_px`` (model-input pixels at or above ``mask.threshold``) and the
    outline (``area_px`` and ``box`` in image pixels of the frame, both None when no outline) are compared with the
    tolerances documented in docs/model-bundle.md."""

    frame: str  # POSIX path inside the bundle of the frame it was computed on (the classifier's, reference/frame.png)
    frame_sha256: str
    input_sha256: str
    mask_sha256: str
    mask_mean: float
    mask_px: int
    area_px: float | None = None
    box: tuple[int, int, int, int] | None = None  # x, y, width, height


@dataclass(frozen=True)
class DescriptorDisplay:
    """``segmentation.descriptors`` (format 6): which descriptors a device shows for this segmentation model.

    ``kappa``: per descriptor, Cohen's kappa against the radiologist's lexicon of the descriptor computed from *this
    model's* outlines of held-out lesions (value, 95 % CI, lesions); a descriptor without one is not validated.
    A descriptor is shown (labelled automatic) exactly when its kappa reaches ``min_kappa`` — :meth:`shown`, the
    one rule; ``measured_on`` says on what (docs/lesion-outline.md, "Display level")."""

    min_kappa: float
    kappa: dict[str, Figure]
    measured_on: str

    def shown(self) -> frozenset[str]:
        return frozenset(name for name, figure in self.kappa.items() if figure.value >= self.min_kappa)

    def to_dict(self) -> dict[str, Any]:
        return {"min_kappa": self.min_kappa, "kappa": {k: f.to_dict() for k, f in self.kappa.items()}, "measured_on": self.measured_on}


@dataclass(frozen=True)
class SegmentationSpec:
    """The ``segmentation`` section (format 4): a second model file in the bundle that outlines the lesion.

    It is run on the same crop as the classifier, letterboxed to its own ``input`` (device/outline.py).
    ``model_build segment`` writes this section as ``segmentation.json``; ``model_build pack-segmentation``
    puts it and its model into a bundle through :func:`write_bundle` (which fills in ``model_sha256``)."""

    input: InputSpec
    outputs: SegmentationOutputs
    model: str = SEGMENTATION_FILE  # file name inside the bundle
    model_sha256: str = "0" * 64
    mask: MaskSpec = field(default_factory=MaskSpec)
    metrics: dict[str, Any] = field(default_factory=dict)  # the build's headline figures (free form)
    reference: SegmentationReference | None = None  # format 5: the selftest's expected outputs; absent: not checked
    descriptors: DescriptorDisplay | None = None  # format 6: the display rule measured on this model; absent: none shown

    def shown_descriptors(self) -> frozenset[str]:
        """The descriptors shown for this model's outlines: none unless measured on them (a format 4/5 bundle)."""
        return self.descriptors.shown() if self.descriptors is not None else frozenset()

    @classmethod
    def from_dict(cls, data: Any, source: str = "segmentation") -> SegmentationSpec:
        """Build and validate a section (also ``segmentation.json``); every problem is a BundleError naming the key."""
        spec = _parse_segmentation(data, DESCRIPTORS_FORMAT_VERSION, source)
        assert spec is not None  # only None for an absent section
        return spec

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if self.reference is None:
            del data["reference"]  # a format-4 section: the key is absent, not null
        elif self.reference.box is not None:
            data["reference"]["box"] = list(self.reference.box)
        if self.descriptors is None:
            del data["descriptors"]  # a format-4/5 section: the key is absent, not null
        else:
            data["descriptors"] = self.descriptors.to_dict()
        return data


P_MALIGNANT_DEFINITIONS = ("softmax",)  # the calibrated softmax probability of 'malignant' (temperature applied)
MODE_FIGURES = ("sensitivity", "specificity", "normals_called_malignant")  # per mode, each optional
CATEGORY_FIGURES = ("malignancy_rate",)  # per category, each optional


@dataclass(frozen=True)
class Figure:
    """A validated figure: the estimate, its 95 % confidence interval and the number of cases behind it."""

    value: float
    ci95: tuple[float, float]
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "ci95": list(self.ci95), "n": self.n}


@dataclass(frozen=True)
class ModeSpec:
    """One operating mode. ``figures``/``categories`` absent: not validated (shown as such, never invented)."""

    malignant_threshold: float
    figures: dict[str, Figure] | None = None  # MODE_FIGURES -> Figure
    categories: dict[str, dict[str, Figure]] | None = None  # category -> {malignancy_rate: Figure}

    def figure(self, name: str) -> Figure | None:
        return (self.figures or {}).get(name)

    def category_figure(self, category: str, name: str = "malignancy_rate") -> Figure | None:
        return (self.categories or {}).get(category, {}).get(name)


@dataclass(frozen=True)
class DecisionSpec:
    """The ``decision`` block (format 3): how probabilities become a category, per operating mode.
    :func:`device.decision.decide` applies it; :meth:`Manifest.decision_spec` gives the implicit one of an
    older bundle."""

    modes: dict[str, ModeSpec]
    p_malignant: str = "softmax"
    lesion_threshold: float = IMPLICIT_LESION_THRESHOLD
    default_mode: str = DEFAULT_MODE.value
    validation: str | None = None  # free text: where the figures come from (e.g. leave-one-source-out)

    def mode(self, name: Mode | str, model: str = "the model") -> ModeSpec:
        found = self.modes.get(str(name))
        if found is None:
            raise BundleError(f"{model} has no operating mode {str(name)!r} (it has {', '.join(self.modes)})")
        return found


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    created: str
    labels: tuple[str, ...]
    input: InputSpec
    outputs: OutputSpec
    model_sha256: str
    temperature: float = 1.0
    thresholds: dict[str, float] = field(default_factory=dict)
    quality: QualitySpec = field(default_factory=QualitySpec)
    cam: CamSpec | None = None
    reference: ReferenceSpec | None = None
    decision: DecisionSpec | None = None  # format 3; absent: decision_spec() is the implicit one
    head: HeadSpec | None = None  # format 3, a site bundle's refitted head (device/head.py); absent: the model's scores
    segmentation: SegmentationSpec | None = None  # format 4, the lesion-outline model; absent: no outline
    training_data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    intended_use: str = "Decision support for trained clinicians. Not a diagnosis."
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["labels"] = list(self.labels)
        if self.cam is not None:
            data["cam"] = {"weights": [list(r) for r in self.cam.weights], "bias": list(self.cam.bias)}
        if self.reference is None:
            del data["reference"]
        else:
            data["reference"]["scores"] = list(self.reference.scores)
        if self.head is None:
            del data["head"]
        else:
            data["head"] = head_to_dict(self.head)
        if self.decision is None:
            del data["decision"]
        else:
            data["decision"] = _decision_to_dict(self.decision)
        if self.segmentation is None:
            del data["segmentation"]
        else:
            data["segmentation"] = self.segmentation.to_dict()
        return data

    def decision_spec(self) -> DecisionSpec:
        """The decision block, or for a bundle without one the implicit spec: one mode, balanced, at
        ``thresholds.malignant`` (0.5 when absent), lesion threshold 0.5, no figures (not validated)."""
        if self.decision is not None:
            return self.decision
        thresholds = self.thresholds if isinstance(self.thresholds, dict) else {}
        threshold = thresholds.get(MALIGNANT, IMPLICIT_MALIGNANT_THRESHOLD)
        return DecisionSpec(modes={DEFAULT_MODE.value: ModeSpec(malignant_threshold=threshold)})

    @classmethod
    def from_dict(cls, data: Any, source: str = "manifest") -> Manifest:
        """Build and validate a manifest; every problem is a :class:`BundleError` naming the key."""
        return _parse_manifest(data, source)

    def validate(self, source: str = "manifest") -> None:
        _validate_manifest(self, source)


@dataclass(frozen=True)
class ModelBundle:
    """A loaded, verified bundle."""

    path: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def segmentation_path(self) -> Path | None:
        """The segmentation model's file, or None when the bundle has none."""
        seg = self.manifest.segmentation
        return None if seg is None else self.path / seg.model

    @property
    def identity(self) -> dict[str, str]:
        return {"name": self.manifest.name, "version": self.manifest.version, "sha256": self.manifest.model_sha256}

    def other_files(self, leave_out: Collection[str] = ()) -> dict[str, bytes]:
        """Every file beside the model, manifest, signature and segmentation model (relative path -> bytes): what a
        bundle written from this one (``write_bundle`` then ``edit_bundle(files=...)``) carries on. ``leave_out``: more
        relative paths, or folders ending in ``/``."""
        own = {MODEL_FILE, MANIFEST_FILE, SIGNATURE_FILE}
        if self.manifest.segmentation is not None:
            own.add(self.manifest.segmentation.model)  # written (and its sha256 checked) by write_bundle
        files: dict[str, bytes] = {}
        for p in sorted(self.path.rglob("*")):
            name = p.relative_to(self.path).as_posix()
            if p.is_file() and name not in own and not any(name == x or (x.endswith("/") and name.startswith(x)) for x in leave_out):
                files[name] = p.read_bytes()
        return files


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_bundle(path: str | os.PathLike[str]) -> ModelBundle:
    """Load a bundle directory, validate its manifest and verify the model's sha256."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"model bundle {root}: not a directory")
    manifest_path = root / MANIFEST_FILE
    model_path = root / MODEL_FILE
    if not manifest_path.is_file():
        raise BundleError(f"model bundle {root}: {MANIFEST_FILE} is missing")
    if not model_path.is_file():
        raise BundleError(f"model bundle {root}: {MODEL_FILE} is missing")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"model bundle {root}: {MANIFEST_FILE} is not valid JSON ({exc})") from exc
    manifest = Manifest.from_dict(data, source=str(manifest_path))
    _check_sha256(root, MODEL_FILE, model_path, manifest.model_sha256)
    if manifest.segmentation is not None:
        seg_path = root / manifest.segmentation.model
        if not seg_path.is_file():
            raise BundleError(f"model bundle {root}: {manifest.segmentation.model} is missing (named by 'segmentation.model')")
        _check_sha256(root, manifest.segmentation.model, seg_path, manifest.segmentation.model_sha256)
    return ModelBundle(path=root, manifest=manifest)


def _check_sha256(root: Path, name: str, path: Path, expected: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise BundleError(
            f"model bundle {root}: sha256 of {name} is {actual[:16]}…, manifest says "
            f"{expected[:16]}… — the model file is corrupted or does not belong to this manifest"
        )


def written_format(manifest: Manifest) -> int:
    """The format a manifest is written in: 6 with a segmentation model and its descriptors' display rule, 5 with
    one and its reference, 4 with one alone, else 3 (what older software reads): each reader refuses what it cannot
    check by its version."""
    seg = manifest.segmentation
    if seg is None:
        return FORMAT_VERSION
    if seg.descriptors is not None:
        return DESCRIPTORS_FORMAT_VERSION
    return SEGMENTATION_FORMAT_VERSION if seg.reference is None else SEGMENTATION_REFERENCE_FORMAT_VERSION


def write_bundle(path: str | os.PathLike[str], model_bytes: bytes, manifest: Manifest, segmentation: bytes | None = None) -> ModelBundle:
    """Write ``model.tflite`` and ``manifest.json`` (sha256 filled in) and return the loaded bundle.

    ``segmentation``: the segmentation model's bytes, exactly when the manifest has a ``segmentation`` section
    (written under ``segmentation.model``, its sha256 filled in)."""
    root = Path(path)
    source = str(root / MANIFEST_FILE)
    if (segmentation is None) != (manifest.segmentation is None):
        raise BundleError(
            f"{source}: a 'segmentation' section and the segmentation model's bytes go together "
            f"(section {'given' if manifest.segmentation else 'absent'}, "
            f"bytes {'given' if segmentation is not None else 'absent'})"
        )
    seg = manifest.segmentation
    if seg is not None and segmentation is not None:
        seg = dataclasses.replace(seg, model_sha256=hashlib.sha256(segmentation).hexdigest())
    manifest = dataclasses.replace(manifest, model_sha256=hashlib.sha256(model_bytes).hexdigest(), segmentation=seg)
    manifest = dataclasses.replace(manifest, format_version=written_format(manifest))
    manifest.validate(source=source)
    root.mkdir(parents=True, exist_ok=True)
    write_atomic(root / MODEL_FILE, model_bytes)
    if seg is not None and segmentation is not None:
        write_atomic(root / seg.model, segmentation)
    text = json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n"
    write_atomic(root / MANIFEST_FILE, text.encode("utf-8"))
    return load_bundle(root)


# --- parsing and validation -------------------------------------------------------------------

_REQUIRED = ("format_version", "name", "version", "created", "labels", "input", "outputs", "model_sha256")


def _parse_manifest(data: Any, source: str) -> Manifest:
    if not isinstance(data, dict):
        raise BundleError(f"{source}: manifest must be a JSON object")
    version = data.get("format_version")
    if version not in READABLE_FORMAT_VERSIONS or isinstance(version, bool):
        raise BundleError(
            f"{source}: unknown manifest format_version {version!r} (this software reads versions {', '.join(map(str, READABLE_FORMAT_VERSIONS))})"
        )
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise BundleError(f"{source}: missing key(s) {', '.join(missing)}")
    known = {f.name for f in dataclasses.fields(Manifest)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise BundleError(f"{source}: unknown key(s) {', '.join(unknown)}")
    try:
        manifest = Manifest(
            format_version=version,
            name=data["name"],
            version=data["version"],
            created=data["created"],
            labels=tuple(data["labels"]) if isinstance(data["labels"], list) else data["labels"],
            input=_parse_input(data["input"], version, source),
            outputs=_parse_section(OutputSpec, data["outputs"], "outputs", source),
            model_sha256=data["model_sha256"],
            temperature=data.get("temperature", 1.0),
            thresholds=data.get("thresholds", {}),
            quality=_parse_section(QualitySpec, data.get("quality", {}), "quality", source),
            cam=_parse_cam(data.get("cam"), source),
            reference=_parse_reference(data.get("reference"), version, source),
            decision=_parse_decision(data.get("decision"), version, source),
            head=parse_head(data.get("head"), source),
            segmentation=_parse_segmentation(data.get("segmentation"), version, source),
            training_data=data.get("training_data", {}),
            metrics=data.get("metrics", {}),
            intended_use=data.get("intended_use", Manifest.intended_use),
        )
    except TypeError as exc:  # wrong shape of a nested section
        raise BundleError(f"{source}: {exc}") from exc
    _validate_manifest(manifest, source)
    return manifest


def _parse_input(value: Any, version: int, source: str) -> InputSpec:
    """Format 1 predates ``input.resampling``: its bundles were validated on OpenCV's resize. In format 2
    the key defaults to "exact" (write_bundle always writes it)."""
    if isinstance(value, dict) and version == 1:
        if "resampling" in value:
            raise BundleError(f"{source}: 'input.resampling' needs format_version 2 (this manifest says 1)")
        value = {**value, "resampling": Resampling.OPENCV.value}
    spec: InputSpec = _parse_section(InputSpec, value, "input", source, nested={"normalization": Normalization})
    return spec


def _parse_reference(value: Any, version: int, source: str) -> ReferenceSpec | None:
    if value is None:
        return None
    if version == 1:
        raise BundleError(f"{source}: 'reference' needs format_version 2 (this manifest says 1)")
    keys = {f.name for f in dataclasses.fields(ReferenceSpec)}
    if not isinstance(value, dict) or set(value) != keys:
        raise BundleError(f"{source}: 'reference' must be an object with exactly {', '.join(sorted(keys))}")
    try:
        scores = tuple(float(v) for v in value["scores"])
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{source}: 'reference.scores' must be a list of numbers ({exc})") from exc
    return ReferenceSpec(frame=value["frame"], frame_sha256=value["frame_sha256"], input_sha256=value["input_sha256"], scores=scores)


def _parse_segmentation(value: Any, version: int, source: str) -> SegmentationSpec | None:
    if value is None:
        return None
    if version < SEGMENTATION_FORMAT_VERSION:
        raise BundleError(f"{source}: 'segmentation' needs format_version {SEGMENTATION_FORMAT_VERSION} (this manifest says {version})")
    if not isinstance(value, dict):
        raise BundleError(f"{source}: 'segmentation' must be an object")
    missing = [key for key in ("input", "outputs") if key not in value]
    if missing:
        raise BundleError(f"{source}: 'segmentation' needs {', '.join(repr(k) for k in missing)}")
    parsed = {
        **value,
        "input": _parse_section(InputSpec, value["input"], "segmentation.input", source, nested={"normalization": Normalization}),
        "outputs": _parse_section(SegmentationOutputs, value["outputs"], "segmentation.outputs", source),
        "mask": _parse_section(MaskSpec, value.get("mask", {}), "segmentation.mask", source),
    }
    if "reference" in value:
        parsed["reference"] = _parse_segmentation_reference(value["reference"], version, source)
    if "descriptors" in value:
        parsed["descriptors"] = _parse_descriptors(value["descriptors"], version, source)
    spec: SegmentationSpec = _parse_section(SegmentationSpec, parsed, "segmentation", source)
    _validate_segmentation(spec, source)
    return spec


def _check_exact_section(value: Any, record: type, key: str, needs: int, version: int, source: str) -> None:
    """A section that needs format ``needs`` and is an object with exactly ``record``'s fields as keys."""
    if version < needs:
        raise BundleError(f"{source}: '{key}' needs format_version {needs} (this manifest says {version})")
    keys = {f.name for f in dataclasses.fields(record)}
    if not isinstance(value, dict) or set(value) != keys:
        got = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise BundleError(f"{source}: '{key}' must be an object with exactly {', '.join(sorted(keys))} (got {got})")


def _parse_descriptors(value: Any, version: int, source: str) -> DescriptorDisplay:
    key = "segmentation.descriptors"
    _check_exact_section(value, DescriptorDisplay, key, DESCRIPTORS_FORMAT_VERSION, version, source)
    return DescriptorDisplay(
        min_kappa=value["min_kappa"],
        kappa=_parse_figures(value["kappa"], DESCRIPTOR_NAMES, f"{key}.kappa", source),
        measured_on=value["measured_on"],
    )


def _parse_segmentation_reference(value: Any, version: int, source: str) -> SegmentationReference:
    key = "segmentation.reference"
    _check_exact_section(value, SegmentationReference, key, SEGMENTATION_REFERENCE_FORMAT_VERSION, version, source)
    box = value["box"]
    if box is not None:
        if not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, int) and not isinstance(v, bool) for v in box):
            raise BundleError(f"{source}: '{key}.box' must be [x, y, width, height], four integers, or null, got {box!r}")
        box = (box[0], box[1], box[2], box[3])
    return SegmentationReference(
        frame=value["frame"],
        frame_sha256=value["frame_sha256"],
        input_sha256=value["input_sha256"],
        mask_sha256=value["mask_sha256"],
        mask_mean=value["mask_mean"],
        mask_px=value["mask_px"],
        area_px=value["area_px"],
        box=box,
    )


def _parse_decision(value: Any, version: int, source: str) -> DecisionSpec | None:
    if value is None:
        return None
    if version < 3:
        raise BundleError(f"{source}: 'decision' needs format_version 3 (this manifest says {version})")
    if not isinstance(value, dict):
        raise BundleError(f"{source}: 'decision' must be an object")
    if "modes" not in value:
        raise BundleError(f"{source}: 'decision' needs 'modes'")
    modes = value["modes"]
    if not isinstance(modes, dict) or not modes:
        raise BundleError(f"{source}: 'decision.modes' must be a non-empty object {{mode: {{malignant_threshold, ...}}}}")
    parsed = {name: _parse_mode(spec, f"decision.modes.{name}", source) for name, spec in modes.items()}
    spec: DecisionSpec = _parse_section(DecisionSpec, {**value, "modes": parsed}, "decision", source)
    return spec


def _parse_mode(value: Any, key: str, source: str) -> ModeSpec:
    if not isinstance(value, dict):
        raise BundleError(f"{source}: '{key}' must be an object")
    if "malignant_threshold" not in value:
        raise BundleError(f"{source}: '{key}' needs 'malignant_threshold'")
    figures = value.get("figures")
    if figures is not None:
        figures = _parse_figures(figures, MODE_FIGURES, f"{key}.figures", source)
    categories = value.get("categories")
    if categories is not None:
        if not isinstance(categories, dict):
            raise BundleError(f"{source}: '{key}.categories' must be an object {{category: {{malignancy_rate: ...}}}}")
        unknown = sorted(set(categories) - {c.value for c in Category})
        if unknown:
            raise BundleError(
                f"{source}: unknown key(s) in '{key}.categories': {', '.join(unknown)} (categories are {', '.join(c.value for c in Category)})"
            )
        categories = {name: _parse_figures(v, CATEGORY_FIGURES, f"{key}.categories.{name}", source) for name, v in categories.items()}
    spec: ModeSpec = _parse_section(ModeSpec, {**value, "figures": figures, "categories": categories}, key, source)
    return spec


def _parse_figures(value: Any, allowed: tuple[str, ...], key: str, source: str) -> dict[str, Figure]:
    if not isinstance(value, dict):
        raise BundleError(f"{source}: '{key}' must be an object")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise BundleError(f"{source}: unknown key(s) in '{key}': {', '.join(unknown)} (allowed: {', '.join(allowed)})")
    return {name: _parse_figure(v, f"{key}.{name}", source) for name, v in value.items()}


def _parse_figure(value: Any, key: str, source: str) -> Figure:
    if not isinstance(value, dict) or set(value) != {"value", "ci95", "n"}:
        raise BundleError(f"{source}: '{key}' must be an object with exactly value, ci95 and n")
    ci = value["ci95"]
    if not isinstance(ci, list) or len(ci) != 2 or not all(_is_number(v) for v in ci):
        raise BundleError(f"{source}: '{key}.ci95' must be [low, high], two numbers")
    return Figure(value=value["value"], ci95=(ci[0], ci[1]), n=value["n"])


def _decision_to_dict(spec: DecisionSpec) -> dict[str, Any]:
    def figures(items: dict[str, Figure]) -> dict[str, Any]:
        return {k: f.to_dict() for k, f in items.items()}

    modes: dict[str, Any] = {}
    for name, mode in spec.modes.items():
        entry: dict[str, Any] = {"malignant_threshold": mode.malignant_threshold}
        if mode.figures is not None:
            entry["figures"] = figures(mode.figures)
        if mode.categories is not None:
            entry["categories"] = {k: figures(v) for k, v in mode.categories.items()}
        modes[name] = entry
    data: dict[str, Any] = {"p_malignant": spec.p_malignant, "lesion_threshold": spec.lesion_threshold, "default_mode": spec.default_mode}
    if spec.validation is not None:
        data["validation"] = spec.validation
    data["modes"] = modes
    return data


def _parse_section(cls: type, value: Any, key: str, source: str, nested: dict[str, type] | None = None) -> Any:
    if not isinstance(value, dict):
        raise BundleError(f"{source}: '{key}' must be an object")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - names)
    if unknown:
        raise BundleError(f"{source}: unknown key(s) in '{key}': {', '.join(unknown)}")
    kwargs = dict(value)
    for sub_key, sub_cls in (nested or {}).items():
        if sub_key in kwargs:
            kwargs[sub_key] = _parse_section(sub_cls, kwargs[sub_key], f"{key}.{sub_key}", source)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise BundleError(f"{source}: '{key}': {exc}") from exc


def _parse_cam(value: Any, source: str) -> CamSpec | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"weights", "bias"}:
        raise BundleError(f"{source}: 'cam' must be an object with exactly 'weights' and 'bias'")
    try:
        weights = tuple(tuple(float(v) for v in row) for row in value["weights"])
        bias = tuple(float(v) for v in value["bias"])
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{source}: 'cam' weights/bias must be numbers ({exc})") from exc
    return CamSpec(weights=weights, bias=bias)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _validate_manifest(m: Manifest, source: str) -> None:
    def fail(message: str) -> NoReturn:
        raise BundleError(f"{source}: {message}")

    for key in ("name", "version", "created"):
        if not isinstance(getattr(m, key), str) or not getattr(m, key).strip():
            fail(f"'{key}' must be a non-empty string")
    if not isinstance(m.labels, tuple) or len(m.labels) < 2 or not all(isinstance(x, str) and x for x in m.labels):
        fail("'labels' must be a list of at least two non-empty strings")
    if len(set(m.labels)) != len(m.labels):
        fail("'labels' must be unique")
    _validate_input(m.input, "input", fail)
    if not isinstance(m.outputs.scores, str) or not m.outputs.scores:
        fail("'outputs.scores' must name the scores tensor")
    if m.outputs.scores_kind not in OUTPUT_KINDS:
        fail(f"'outputs.scores_kind' must be one of {OUTPUT_KINDS}")
    if (m.outputs.cam_features is None) != (m.cam is None):
        fail("'outputs.cam_features' and 'cam' must be given together")
    if m.cam is not None:
        if len(m.cam.bias) != len(m.labels) or any(len(row) != len(m.labels) for row in m.cam.weights):
            fail("'cam.weights' must be [channels][n_labels] and 'cam.bias' [n_labels]")
        if not m.cam.weights:
            fail("'cam.weights' is empty")
    if not isinstance(m.model_sha256, str) or len(m.model_sha256) != 64:
        fail("'model_sha256' must be a 64-character hex digest")
    if not _is_number(m.temperature) or m.temperature <= 0:
        fail(f"'temperature' must be a positive number, got {m.temperature!r}")
    if not isinstance(m.thresholds, dict):
        fail("'thresholds' must be an object {label: threshold}")
    for label, value in m.thresholds.items():
        if label not in m.labels:
            fail(f"'thresholds' names unknown label {label!r}")
        if not _is_number(value) or not 0.0 < value < 1.0:
            fail(f"'thresholds.{label}' must be a number in (0, 1), got {value!r}")
    q = m.quality
    if not _is_number(q.min_confidence) or not 0.0 <= q.min_confidence < 1.0:
        fail("'quality.min_confidence' must be in [0, 1)")
    if q.max_entropy is not None and (not _is_number(q.max_entropy) or not 0.0 < q.max_entropy <= 1.0):
        fail("'quality.max_entropy' must be in (0, 1]")
    if m.reference is not None:
        _validate_reference(m.reference, len(m.labels), fail)
    if m.decision is not None:
        if m.format_version < 3:
            fail(f"'decision' needs format_version 3 (this manifest says {m.format_version})")
        _validate_decision(m.decision, m.labels, fail)
    if m.segmentation is not None:
        if m.format_version < SEGMENTATION_FORMAT_VERSION:
            fail(f"'segmentation' needs format_version {SEGMENTATION_FORMAT_VERSION} (this manifest says {m.format_version})")
        _validate_segmentation(m.segmentation, source)
        if m.segmentation.reference is not None and m.format_version < SEGMENTATION_REFERENCE_FORMAT_VERSION:
            fail(f"'segmentation.reference' needs format_version {SEGMENTATION_REFERENCE_FORMAT_VERSION} (this manifest says {m.format_version})")
        if m.segmentation.descriptors is not None and m.format_version < DESCRIPTORS_FORMAT_VERSION:
            fail(f"'segmentation.descriptors' needs format_version {DESCRIPTORS_FORMAT_VERSION} (this manifest says {m.format_version})")
    if m.head is not None:
        if m.format_version < 3:
            fail(f"'head' needs format_version 3 (this manifest says {m.format_version})")
        if m.cam is None:
            fail("'head' needs 'cam' and 'outputs.cam_features': the feature map it is applied to")
        validate_head(m.head, len(m.labels), m.model_sha256, source, cam_channels=len(m.cam.weights))
    for key in ("training_data", "metrics"):
        if not isinstance(getattr(m, key), dict):
            fail(f"'{key}' must be an object")
    if not isinstance(m.intended_use, str):
        fail("'intended_use' must be a string")


def _validate_input(spec: InputSpec, key: str, fail: Any) -> None:
    for name in ("height", "width"):
        value = getattr(spec, name)
        if not isinstance(value, int) or isinstance(value, bool) or not 8 <= value <= 4096:
            fail(f"'{key}.{name}' must be an integer between 8 and 4096, got {value!r}")
    if spec.dtype not in INPUT_DTYPES:
        fail(f"'{key}.dtype' must be one of {INPUT_DTYPES}, got {spec.dtype!r}")
    if spec.color not in COLOR_MODES:
        fail(f"'{key}.color' must be one of {COLOR_MODES}, got {spec.color!r}")
    if spec.resize not in RESIZE_POLICIES:
        fail(f"'{key}.resize' must be one of {RESIZE_POLICIES}, got {spec.resize!r}")
    if spec.resampling not in [r.value for r in Resampling]:
        fail(f"'{key}.resampling' must be one of {[r.value for r in Resampling]}, got {spec.resampling!r}")
    norm = spec.normalization
    if not _is_number(norm.mean) or not _is_number(norm.scale) or norm.scale == 0:
        fail(f"'{key}.normalization' needs numeric 'mean' and non-zero 'scale'")
    if not isinstance(norm.in_model, bool):
        fail(f"'{key}.normalization.in_model' must be true or false")


def _validate_segmentation(s: SegmentationSpec, source: str) -> None:
    def fail(message: str) -> NoReturn:
        raise BundleError(f"{source}: {message}")

    name = s.model
    if (
        not isinstance(name, str)
        or not name.endswith(".tflite")
        or "/" in name
        or "\\" in name
        or name in (MODEL_FILE, ".tflite")
        or name.startswith(".")
    ):
        fail(f"'segmentation.model' must be a file name beside {MODEL_FILE} ending in .tflite (not {MODEL_FILE}), got {name!r}")
    if not _is_sha256(s.model_sha256):
        fail("'segmentation.model_sha256' must be a 64-character lower-case hex digest")
    _validate_input(s.input, "segmentation.input", fail)
    for key in ("mask", "lesion_logit"):
        value = getattr(s.outputs, key)
        if not isinstance(value, str) or not value:
            fail(f"'segmentation.outputs.{key}' must name a tensor")
    if s.outputs.mask == s.outputs.lesion_logit:
        fail("'segmentation.outputs.mask' and 'segmentation.outputs.lesion_logit' name the same tensor")
    if not _in_open_unit(s.mask.threshold):
        fail(f"'segmentation.mask.threshold' must be a number in (0, 1), got {s.mask.threshold!r}")
    px = s.mask.min_region_px
    if not isinstance(px, int) or isinstance(px, bool) or px < 1:
        fail(f"'segmentation.mask.min_region_px' must be a positive integer (model input pixels), got {px!r}")
    if not isinstance(s.metrics, dict):
        fail("'segmentation.metrics' must be an object")
    if s.reference is not None:
        _validate_segmentation_reference(s.reference, s.input.height * s.input.width, fail)
    if s.descriptors is not None:
        _validate_descriptors(s.descriptors, fail)


def _validate_descriptors(d: DescriptorDisplay, fail: Any) -> None:
    key = "segmentation.descriptors"
    if not _is_number(d.min_kappa) or not 0.0 < d.min_kappa <= 1.0:
        fail(f"'{key}.min_kappa' must be a number in (0, 1] (the display level), got {d.min_kappa!r}")
    for name, figure in d.kappa.items():
        _validate_figure(figure, f"{key}.kappa.{name}", fail, lowest=-1.0)
    if not isinstance(d.measured_on, str) or not d.measured_on.strip():
        fail(f"'{key}.measured_on' must say what the kappas were measured on, got {d.measured_on!r}")


def _validate_segmentation_reference(ref: SegmentationReference, input_px: int, fail: Any) -> None:
    key = "segmentation.reference"
    path = PurePosixPath(ref.frame) if isinstance(ref.frame, str) else None
    if path is None or path.is_absolute() or ".." in path.parts or not ref.frame.strip():
        fail(f"'{key}.frame' must be a relative path inside the bundle, got {ref.frame!r}")
    for name in ("frame_sha256", "input_sha256", "mask_sha256"):
        if not _is_sha256(getattr(ref, name)):
            fail(f"'{key}.{name}' must be a 64-character lower-case hex digest")
    if not _is_number(ref.mask_mean) or not 0.0 <= ref.mask_mean <= 1.0:
        fail(f"'{key}.mask_mean' must be a number in [0, 1] (a mean probability), got {ref.mask_mean!r}")
    px = ref.mask_px
    if not isinstance(px, int) or isinstance(px, bool) or not 0 <= px <= input_px:
        fail(f"'{key}.mask_px' must be an integer in [0, {input_px}] (model input pixels), got {px!r}")
    if (ref.area_px is None) != (ref.box is None):
        fail(f"'{key}.area_px' and '{key}.box' are given together (an outline) or both null (none)")
    if ref.area_px is not None and (not _is_number(ref.area_px) or ref.area_px <= 0):
        fail(f"'{key}.area_px' must be a positive number (image pixels) or null, got {ref.area_px!r}")
    if ref.box is not None and (min(ref.box[:2]) < 0 or min(ref.box[2:]) < 1):
        fail(f"'{key}.box' must have x, y >= 0 and width, height >= 1, got {list(ref.box)!r}")


def _in_open_unit(value: Any) -> bool:
    return _is_number(value) and 0.0 < value < 1.0


def _validate_decision(d: DecisionSpec, labels: tuple[str, ...], fail: Any) -> None:
    missing = [name for name in (MALIGNANT, NORMAL) if name not in labels]
    if missing:
        fail(f"'decision' needs the labels {MALIGNANT!r} and {NORMAL!r} (missing {', '.join(missing)})")
    if d.p_malignant not in P_MALIGNANT_DEFINITIONS:
        fail(f"'decision.p_malignant' must be one of {P_MALIGNANT_DEFINITIONS}, got {d.p_malignant!r}")
    if not _in_open_unit(d.lesion_threshold):
        fail(f"'decision.lesion_threshold' must be a number in (0, 1), got {d.lesion_threshold!r}")
    if d.validation is not None and not isinstance(d.validation, str):
        fail("'decision.validation' must be a string")
    names = [m.value for m in MODE_ORDER]
    unknown = sorted(set(d.modes) - set(names))
    if unknown:
        fail(f"unknown mode(s) in 'decision.modes': {', '.join(unknown)} (modes are {', '.join(names)})")
    if d.default_mode not in d.modes:
        fail(f"'decision.default_mode' {d.default_mode!r} is not one of the bundle's modes ({', '.join(d.modes)})")
    for name, mode in d.modes.items():
        if not _in_open_unit(mode.malignant_threshold):
            fail(f"'decision.modes.{name}.malignant_threshold' must be a number in (0, 1), got {mode.malignant_threshold!r}")
        for fig_name, figure in (mode.figures or {}).items():
            _validate_figure(figure, f"decision.modes.{name}.figures.{fig_name}", fail)
        for category, figures in (mode.categories or {}).items():
            for fig_name, figure in figures.items():
                _validate_figure(figure, f"decision.modes.{name}.categories.{category}.{fig_name}", fail)
    ordered = [(name, d.modes[name].malignant_threshold) for name in names if name in d.modes]
    for (low_name, low), (high_name, high) in zip(ordered, ordered[1:]):
        if low > high:
            fail(f"'decision.modes' thresholds must be ordered {' <= '.join(names)}: {low_name} {low} is above {high_name} {high}")


def _validate_figure(f: Figure, key: str, fail: Any, lowest: float = 0.0) -> None:
    """A rate or probability in [0, 1]; ``lowest=-1`` for an agreement statistic such as Cohen's kappa."""
    if not _is_number(f.value) or not lowest <= f.value <= 1.0:
        fail(f"'{key}.value' must be a number in [{lowest:g}, 1], got {f.value!r}")
    low, high = f.ci95
    if not (_is_number(low) and _is_number(high) and lowest <= low <= high <= 1.0):
        fail(f"'{key}.ci95' must be [low, high] with {lowest:g} <= low <= high <= 1, got {list(f.ci95)!r}")
    if not isinstance(f.n, int) or isinstance(f.n, bool) or f.n < 1:
        fail(f"'{key}.n' must be a positive integer (the cases behind the figure), got {f.n!r}")


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _validate_reference(ref: ReferenceSpec, n_labels: int, fail: Any) -> None:
    path = PurePosixPath(ref.frame) if isinstance(ref.frame, str) else None
    if path is None or path.is_absolute() or ".." in path.parts or not ref.frame.strip():
        fail(f"'reference.frame' must be a relative path inside the bundle, got {ref.frame!r}")
    for key in ("frame_sha256", "input_sha256"):
        if not _is_sha256(getattr(ref, key)):
            fail(f"'reference.{key}' must be a 64-character lower-case hex digest")
    if len(ref.scores) != n_labels or not all(math.isfinite(v) for v in ref.scores):
        fail(f"'reference.scores' must be {n_labels} finite numbers (one per label)")


# --- editing a bundle after its build ------------------------------------------------------------


def edit_bundle(path: str | os.PathLike[str], *, manifest: Manifest | None = None, files: Mapping[str, bytes] | None = None) -> ModelBundle:
    """The one way to change a built bundle: replace its manifest and/or add or replace files beside it.

    The model file never changes here (that is a new build). A signed bundle is refused — its
    signature covers every file, so an edit would void it silently; edit the unsigned build, then
    sign it again (``python -m device.model.signing sign``). Each file is written atomically and the
    result is loaded (validated) before returning."""
    root = Path(path)
    current = load_bundle(root)
    if (root / SIGNATURE_FILE).exists():
        raise BundleError(
            f"model bundle {root} is signed ({SIGNATURE_FILE}): an edit would void its signature — edit the unsigned bundle, then sign it again"
        )
    protected = {MODEL_FILE, MANIFEST_FILE, SIGNATURE_FILE}
    if current.manifest.segmentation is not None:
        protected.add(current.manifest.segmentation.model)
    if manifest is not None:
        if manifest.model_sha256 != current.manifest.model_sha256:
            raise BundleError(f"model bundle {root}: the edited manifest names another model (a new model is a new build)")
        if _without_reference(manifest.segmentation) != _without_reference(current.manifest.segmentation):
            raise BundleError(
                f"model bundle {root}: the edited manifest changes 'segmentation' (a new segmentation "
                "model is a new build: model_build pack-segmentation)"
            )
    for name, data in (files or {}).items():
        target = _inside(root, name)
        if target.name in protected and target.parent == root:
            raise BundleError(f"model bundle {root}: {name} cannot be replaced as a file (use manifest=, or build again)")
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, data)
    if manifest is not None:
        manifest = dataclasses.replace(manifest, format_version=written_format(manifest))  # the current format
        manifest.validate(source=str(root / MANIFEST_FILE))
        text = json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n"
        write_atomic(root / MANIFEST_FILE, text.encode("utf-8"))
    return load_bundle(root)


def _without_reference(spec: SegmentationSpec | None) -> SegmentationSpec | None:
    """The section minus its selftest reference: what an edit may not change (the reference may be re-recorded)."""
    return None if spec is None else dataclasses.replace(spec, reference=None)


def _inside(root: Path, name: str) -> Path:
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise BundleError(f"model bundle {root}: {name!r} is not a path inside the bundle")
    return root.joinpath(*relative.parts)
