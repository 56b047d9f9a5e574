"""The build report, ``report/metrics.json`` of a bundle: one typed record, written by the build and read by the card,
the CLI summary, the reader comparison, the re-validation and the operating-modes study.

Every read is validated: a missing key or a value of the wrong kind raises :class:`ReportError` naming the file and
the key (``evaluations.test_int8.all.headline``). The sections that other commands add later (``reader_baseline``,
``revalidation``, ``leave_one_source_out``, ``seed_spread``) and the per-subset metrics of :func:`model_build.evaluate.evaluate_split`
stay JSON mappings, checked to be mappings; their own producers define them.

:meth:`BuildReport.to_json` gives back what was read, key for key and in the same order (keys this version does not
know are kept), so a report rewritten by ``reader --write``, ``revalidate --write`` or ``modes --write`` changes only
the section that command adds.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_build.calibrate import OperatingPoint
from model_build.export import Parity

REPORT_FILE = Path("report") / "metrics.json"
# The evaluations every build writes (the card's tables): float on validation, float and int8 on test.
REQUIRED_EVALUATIONS = ("val_float", "test_float", "test_int8")


class ReportError(ValueError):
    """A build report that cannot be read: the message names the file and the key."""


@dataclass(frozen=True)
class ParityGate:
    """The int8 agreement the project requires, the one the build was run with, and whether the project's was met."""

    required: float
    applied: float
    passed: bool


# subset ("all", "source:busi", ...) -> evaluate.evaluate_split's metrics (headline, n, n_groups, per_class, ...)
Evaluation = dict[str, dict[str, Any]]
Section = dict[str, Any]


@dataclass
class BuildReport:
    labels: tuple[str, ...]
    temperature: float
    operating_point: OperatingPoint | None  # None when the labels have no "malignant"
    parity_int8_vs_float_test: Parity
    parity_gate: ParityGate | None
    evaluations: dict[str, Evaluation]
    shortcut_check: Section | None
    reader_baseline: Section | None
    history: Section  # train.History as a mapping
    initialised_from: Section | None
    split: dict[str, dict[str, int]]  # split -> "source/label" -> images
    n_groups: dict[str, int]
    bad_files: list[Section]
    config: Section  # pipeline.BuildConfig as a mapping
    build_seconds: float
    machine: dict[str, str]
    pretrained: bool
    external_test: Section | None = None  # --external-test (absent from reports written before it)
    revalidation: Section | None = None  # model_build revalidate --write
    leave_one_source_out: Section | None = None  # model_build modes --write
    seed_spread: Section | None = None  # model_build seed-spread --write
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as read
    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)  # the keys as read, in their order

    @classmethod
    def from_json(cls, data: Any, source: str | Path = "report/metrics.json") -> BuildReport:
        """The report from its JSON object; ``source`` names it in errors."""
        r = _Reader(str(source))
        top = r.mapping(data, "")
        known = {f.name for f in _DATA_FIELDS}
        return cls(
            labels=tuple(r.string(v, f"labels[{i}]") for i, v in enumerate(r.list(r.need(top, "labels"), "labels"))),
            temperature=r.number(r.need(top, "temperature"), "temperature"),
            operating_point=r.optional(top, "operating_point", lambda v, k: _record(r, OperatingPoint, v, k)),
            parity_int8_vs_float_test=_record(r, Parity, r.need(top, "parity_int8_vs_float_test"), "parity_int8_vs_float_test"),
            parity_gate=r.optional(top, "parity_gate", lambda v, k: _record(r, ParityGate, v, k)),
            evaluations=_evaluations(r, r.need(top, "evaluations")),
            shortcut_check=r.optional(top, "shortcut_check", r.mapping),
            reader_baseline=r.optional(top, "reader_baseline", r.mapping),
            history=_history(r, r.need(top, "history")),
            initialised_from=r.optional(top, "initialised_from", r.mapping),
            split=_split(r, r.need(top, "split")),
            n_groups={k: r.integer(v, f"n_groups.{k}") for k, v in r.mapping(r.need(top, "n_groups"), "n_groups").items()},
            bad_files=[r.mapping(v, f"bad_files[{i}]") for i, v in enumerate(r.list(r.need(top, "bad_files"), "bad_files"))],
            config=_config(r, r.need(top, "config")),
            build_seconds=r.number(r.need(top, "build_seconds"), "build_seconds"),
            machine={k: r.string(v, f"machine.{k}") for k, v in r.mapping(r.need(top, "machine"), "machine").items()},
            pretrained=r.boolean(r.need(top, "pretrained"), "pretrained"),
            external_test=r.optional(top, "external_test", r.mapping),
            revalidation=r.optional(top, "revalidation", r.mapping),
            leave_one_source_out=r.optional(top, "leave_one_source_out", r.mapping),
            seed_spread=r.optional(top, "seed_spread", r.mapping),
            extra={k: v for k, v in top.items() if k not in known},
            key_order=tuple(top),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object: the keys as read, in their order, then those set since (never a None that was absent)."""
        values: dict[str, Any] = {f.name: _plain(getattr(self, f.name)) for f in _DATA_FIELDS}
        values.update(self.extra)
        order = list(self.key_order) + [f.name for f in _DATA_FIELDS if f.name not in self.key_order and values[f.name] is not None]
        order += [k for k in self.extra if k not in order]
        return {k: values[k] for k in order}

    def to_bytes(self) -> bytes:
        """The file's bytes, as the build writes them (indent 2, a final newline)."""
        return (json.dumps(self.to_json(), indent=2) + "\n").encode("utf-8")

    def headline(self, evaluation: str = "test_int8", subset: str = "all") -> dict[str, Any]:
        """The headline metrics (name -> {value, ci95}) of one evaluation's subset."""
        return self.evaluations[evaluation][subset]["headline"]


_DATA_FIELDS = tuple(f for f in dataclasses.fields(BuildReport) if f.name not in ("extra", "key_order"))


def read_report(bundle_dir: Path) -> BuildReport:
    """``report/metrics.json`` of a bundle (or build folder)."""
    path = Path(bundle_dir) / REPORT_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"{path}: no build report (the bundle was not built by model_build, or its report/ was removed)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not JSON ({exc})") from None
    return BuildReport.from_json(data, path)


def write_report(bundle_dir: Path, report: BuildReport) -> Path:
    path = Path(bundle_dir) / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(report.to_bytes())
    return path


@dataclass(frozen=True)
class TrainingOrigin:
    """What a later build carries over from the build whose float weights it starts from (``--init-weights``):
    that build's configuration, training history and time, as far as its report has them (each may be absent)."""

    config: Section | None
    history: Section | None
    build_seconds: float | None


def read_training_origin(bundle_dir: Path) -> TrainingOrigin:
    """The provenance sections of ``report/metrics.json``, each checked when present; the rest of the report is not
    needed (and not required) to trace where weights came from."""
    path = Path(bundle_dir) / REPORT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: no build report") from None
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not JSON ({exc})") from None
    r = _Reader(str(path))
    top = r.mapping(data, "")
    return TrainingOrigin(
        config=r.optional(top, "config", r.mapping),
        history=r.optional(top, "history", r.mapping),
        build_seconds=r.optional(top, "build_seconds", r.number),
    )


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, tuple):
        return list(value)
    return value


class _Reader:
    """Checks one value at a time; every error names the file and the dotted key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> ReportError:
        return ReportError(f"{self.source}: {f'key {key!r}' if key else 'the report'}: {problem}")

    def need(self, data: Mapping[str, Any], key: str, where: str = "") -> Any:
        if key not in data:
            raise self.fail(f"{where}{key}", "missing")
        return data[key]

    def optional(self, data: Mapping[str, Any], key: str, read: Any) -> Any:
        value = data.get(key)
        return None if value is None else read(value, key)

    def mapping(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected an object, got {type(value).__name__}")
        return value

    def list(self, value: Any, key: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list, got {type(value).__name__}")
        return value

    def number(self, value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"expected a number, got {value!r}")
        return value

    def integer(self, value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected an integer, got {value!r}")
        return value

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {value!r}")
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {value!r}")
        return value


def _record(r: _Reader, kind: Any, value: Any, key: str) -> Any:
    """A flat dataclass (OperatingPoint, Parity, ParityGate) from its mapping: every field present, of its kind."""
    data = r.mapping(value, key)
    checks = {"float": r.number, "int": r.integer, "bool": r.boolean, "str": r.string}
    fields = {}
    for f in dataclasses.fields(kind):
        fields[f.name] = checks[str(f.type)](r.need(data, f.name, f"{key}."), f"{key}.{f.name}")
    return kind(**fields)


def _evaluations(r: _Reader, value: Any) -> dict[str, Evaluation]:
    evaluations = r.mapping(value, "evaluations")
    for name in REQUIRED_EVALUATIONS:
        r.need(evaluations, name, "evaluations.")
    for name, subsets in evaluations.items():
        for subset, metrics in r.mapping(subsets, f"evaluations.{name}").items():
            key = f"evaluations.{name}.{subset}"
            m = r.mapping(metrics, key)
            r.mapping(r.need(m, "headline", f"{key}."), f"{key}.headline")
            r.integer(r.need(m, "n", f"{key}."), f"{key}.n")
            r.integer(r.need(m, "n_groups", f"{key}."), f"{key}.n_groups")
        r.need(subsets, "all", f"evaluations.{name}.")
    return evaluations


def _history(r: _Reader, value: Any) -> Section:
    history = r.mapping(value, "history")
    r.list(r.need(history, "epoch", "history."), "history.epoch")
    r.string(r.need(history, "stopped_by", "history."), "history.stopped_by")
    r.integer(r.need(history, "best_epoch", "history."), "history.best_epoch")
    return history


def _config(r: _Reader, value: Any) -> Section:
    config = r.mapping(value, "config")
    r.string(r.need(config, "arch", "config."), "config.arch")
    r.integer(r.need(config, "hash_distance", "config."), "config.hash_distance")
    r.integer(r.need(config, "seed", "config."), "config.seed")
    return config


def _split(r: _Reader, value: Any) -> dict[str, dict[str, int]]:
    split = r.mapping(value, "split")
    for name in ("train", "val", "test"):
        r.need(split, name, "split.")
    return {name: {k: r.integer(v, f"split.{name}.{k}") for k, v in r.mapping(counts, f"split.{name}").items()} for name, counts in split.items()}
