"""``python -m device``: the appliance's command line. Other parts build on it — keep it stable.

    classify [--model DIR] [--json] PATH...     files and/or folders, one result per input
    run --source SPEC [--headless] [--once]     capture -> classify -> store, until stopped
    history [--patient REF] [--json]            stored results, newest first (with their corrections)
    correct RESULT_ID --void|--move-to EXAM --reason R   void a result or move it to its exam (a correction)
    export --csv|--json [--out FILE]            every stored result
    config default | config check FILE          print the default config / validate a file
    uplink [--broker HOST:PORT]                 deliver stored results to the hub (own process)
    demo-frames DIR                             write synthetic scanner screens for demos
    selftest [--model DIR]                      runtime, CPU, preprocessing checksum, the bundle's reference outputs
    site-adapt CASES --out DIR [--model DIR]    refit the head on this site's normal scans: a site bundle
    site-bundle show | use DIR | undo           the site bundle the device runs instead of [model] path (data dir)

``--config FILE`` is accepted by every command (before or after its name).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from device import __version__
from device.allocator import map_large_blocks_apart
from device.analysis import AnalysisOptions
from device.config import DEFAULT_TOML, DeviceConfig, load_config
from device.decision import Category
from device.engine import Classification, Classifier
from device.errors import ConfigError, ImageDecodeError, SonopiError, SourceError, StoreError
from device.lesion_record import LesionRecord
from device.results import ResultRecord
from device.sources.base import Frame, FrameSource
from device.sources.files import FileListSource, frames_from_file, list_inputs

log = logging.getLogger("device")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="device configuration TOML file")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")

    parser = argparse.ArgumentParser(prog="python -m device", description="sonopi appliance core", parents=[common])
    parser.add_argument("--version", action="version", version=f"sonopi {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    classify = commands.add_parser("classify", parents=[common], help="classify image/DICOM/video files and folders")
    classify.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    classify.add_argument("--model", type=Path, help="model bundle directory (default: the configured/shipped bundle)")
    classify.add_argument("--json", action="store_true", help="one JSON object per input on stdout")

    run = commands.add_parser("run", parents=[common], help="capture -> classify -> store until stopped")
    run.add_argument("--source", help="source spec, e.g. folder:PATH, v4l2:/dev/video0 (default: from config)")
    run.add_argument("--model", type=Path, help="model bundle directory")
    run.add_argument("--headless", action="store_true", help="no display (the only mode of this command; for clarity in scripts)")
    run.add_argument(
        "--once",
        action="store_true",
        help="process a file/folder source once and exit; a folder "
        "resumes where a previous run stopped (frames already stored with this model are skipped)",
    )
    run.add_argument("--rerun", action="store_true", help="with --once: classify frames already stored again")

    history = commands.add_parser("history", parents=[common], help="stored results, newest first")
    history.add_argument("--patient", metavar="REF")
    history.add_argument("--limit", type=int, default=50)
    history.add_argument("--json", action="store_true")

    correct = commands.add_parser("correct", parents=[common], help="void a stored result, or move it to the exam it belongs to (never an overwrite)")
    correct.add_argument("result_id", metavar="RESULT_ID")
    what = correct.add_mutually_exclusive_group(required=True)
    what.add_argument("--void", action="store_true", help="the result does not count")
    what.add_argument("--move-to", metavar="EXAM_ID", help="the exam (on this device) the result belongs to")
    correct.add_argument("--side", choices=("L", "R"), help="with --move-to: the side (default: the exam's)")
    correct.add_argument(
        "--reason",
        required=True,
        help="void: poor_image, test_scan, wrong_patient, duplicate, other; move: wrong_patient, wrong_side, wrong_exam, other",
    )
    correct.add_argument("--note", default="", help="free text (needed with --reason other)")
    correct.add_argument("--by", help="who corrects (recorded in the audit trail)")

    export = commands.add_parser("export", parents=[common], help="export every stored result")
    fmt = export.add_mutually_exclusive_group(required=True)
    fmt.add_argument("--csv", action="store_true")
    fmt.add_argument("--json", action="store_true", help="JSON lines")
    export.add_argument("--out", type=Path, help="file to write (default: stdout)")

    config = commands.add_parser("config", parents=[common], help="configuration tools")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    config_commands.add_parser("default", help="print a complete, commented default configuration")
    check = config_commands.add_parser("check", help="validate a configuration file (exit 0/1)")
    check.add_argument("file", type=Path)

    uplink = commands.add_parser("uplink", parents=[common], help="deliver stored results to the hub over MQTT")
    uplink.add_argument("--broker", metavar="HOST:PORT", help="override [uplink] broker")

    site = commands.add_parser("site-check", parents=[common], help="the model on a site's biopsy-proven cases; propose a site threshold")
    site.add_argument("cases", type=Path, help="folder with labels.csv (filename,label) and the images")
    site.add_argument("--model", type=Path, help="model bundle directory (default: the configured bundle)")
    site.add_argument("--target-sensitivity", type=float, default=0.95)
    site.add_argument("--confidence", type=float, default=0.9)

    selftest = commands.add_parser(
        "selftest", parents=[common], help="does this device compute what the workstation validated? (PASS/WARN/FAIL lines)"
    )
    selftest.add_argument("--model", type=Path, help="model bundle directory (default: the configured bundle)")

    demo = commands.add_parser("demo-frames", parents=[common], help="write synthetic scanner screens (demos)")
    demo.add_argument("out", type=Path)
    demo.add_argument("--count", type=int, default=12)
    _add_site_adapt_parser(commands, common)
    _add_site_bundle_parser(commands, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    map_large_blocks_apart()  # freed frames go back to the system (device/allocator.py)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "config":
            return _config_command(args)
        config = load_config(getattr(args, "config", None))
        handler = {
            "classify": _classify_command,
            "run": _run_command,
            "history": _history_command,
            "correct": _correct_command,
            "export": _export_command,
            "uplink": _uplink_command,
            "demo-frames": _demo_command,
            "site-check": _site_check_command,
            "selftest": _selftest_command,
            "site-adapt": _site_adapt_command,
            "site-bundle": _site_bundle_command,
        }[args.command]
        return handler(args, config)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SonopiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


# --- config --------------------------------------------------------------------------------------


def _config_command(args: argparse.Namespace) -> int:
    if args.config_command == "default":
        sys.stdout.write(DEFAULT_TOML)
        return EXIT_OK
    try:
        load_config(args.file)
    except ConfigError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.file}: valid")
    return EXIT_OK


# --- classify ------------------------------------------------------------------------------------


def _expand_inputs(paths: list[Path]) -> Iterator[Path]:
    """Folders expand to their readable files; everything else is attempted as given."""
    for path in paths:
        if path.is_dir():
            try:
                files = list_inputs(path)
            except SourceError:
                yield path
                continue
            if not files:
                yield path  # reported as an error: nothing to classify
            yield from files
        else:
            yield path


def classify_path(classifier: Classifier, path: Path, config: DeviceConfig) -> dict[str, Any]:
    """Classify one input. Multi-frame inputs (cine DICOM, video) report the frame with the highest
    malignant probability (the most cautious reading), with its index."""
    if path.is_dir():
        raise ImageDecodeError(f"{path}: folder has no readable image, DICOM or video files", "empty_folder")
    best: tuple[float, int, Classification] | None = None
    count = 0
    options = AnalysisOptions.from_config(config)  # the one door: as `device run` and the touchscreen analyse it
    for frame in frames_from_file(path, options.dicom_frame):
        result = classifier.classify(frame.image, spacing=frame.spacing, **options.classify_kwargs())
        score = result.probabilities.get("malignant", result.probabilities[result.decision])
        if best is None or score > best[0]:
            best = (score, frame.index, result)
        count += 1
    assert best is not None  # frames_from_file yields at least one frame or raises
    _, index, result = best
    assessment = result.assessment
    assert assessment is not None  # the engine assesses every classification (None only in old tests)
    output = {
        "path": str(path),
        "label": result.decision,
        "category": assessment.category.value,
        "p_malignant": round(assessment.p_malignant, 6),
        "p_lesion": round(assessment.p_lesion, 6),
        "mode": mode_summary(classifier),
        "probabilities": {k: round(v, 6) for k, v in result.probabilities.items()},
        "inconclusive": result.inconclusive,
        "reasons": list(result.reasons),
        "thresholds": result.thresholds,
        "crop": list(result.crop.as_tuple()),
        "model": classifier.bundle.identity | {"runtime": classifier.runtime},
        "latency_ms": round(result.latency_ms, 3),
        # null: the bundle has no segmentation model (docs/device.md); else found / not found / withheld
        "lesion": result.lesion.to_json() if result.lesion is not None else None,
    }
    if count > 1:
        output.update(frame=index, frames=count)
    return output


def mode_summary(classifier: Classifier) -> dict[str, Any]:
    """The operating mode a result was judged in: its thresholds and validated figures (null when the bundle
    has none: not validated)."""
    spec = classifier.decision_spec
    mode = spec.mode(classifier.mode)

    def figure(f: Any) -> dict[str, Any] | None:
        return None if f is None else {"value": f.value, "ci95": list(f.ci95), "n": f.n}

    return {
        "name": classifier.mode.value,
        "malignant_threshold": classifier.malignant_threshold,
        "validated_malignant_threshold": mode.malignant_threshold,
        "lesion_threshold": spec.lesion_threshold,
        "validation": spec.validation,
        "figures": {name: figure(mode.figure(name)) for name in ("sensitivity", "specificity", "normals_called_malignant")},
        "categories": {name: figure(mode.category_figure(name)) for name in ("no_lesion", "low_suspicion", "suspicious")},
    }


def _classify_command(args: argparse.Namespace, config: DeviceConfig) -> int:
    from device.analysis import load_classifier

    classifier = load_classifier(config, args.model)
    failures = 0
    for path in _expand_inputs(args.paths):
        try:
            output = classify_path(classifier, path, config)
        except SonopiError as exc:
            failures += 1
            output = {"path": str(path), "error": {"code": exc.code, "message": str(exc)}}
        _print_classification(output, args.json)
    return EXIT_FAILED if failures else EXIT_OK


def _print_classification(output: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(output, ensure_ascii=False), flush=True)
    elif "error" in output:
        print(f"{output['path']}: ERROR {output['error']['code']}: {output['error']['message']}", flush=True)
    else:
        probs = "  ".join(f"{k} {v:.2f}" for k, v in output["probabilities"].items())
        flag = "  INCONCLUSIVE: " + "; ".join(output["reasons"]) if output["inconclusive"] else ""
        mode = output["mode"]
        print(
            f"{output['path']}: {output['category']} ({output['label']}), p(malignant) {output['p_malignant']:.3f} "
            f"in {mode['name']} mode (suspicious at >= {mode['malignant_threshold']:.3f})  ({probs}){flag}"
            f"{_lesion_text(output['lesion'], output['category'])}",
            flush=True,
        )


def _lesion_text(lesion: dict[str, Any] | None, category: str) -> str:
    """The outline in the one-line summary, in the result card's words (``LesionRecord.headline``), then the
    descriptors shown on screen; nothing without a segmentation model or for a withheld outline."""
    if lesion is None:
        return ""
    record = LesionRecord.from_json(lesion, "lesion")
    no_lesion_seen = category == Category.NO_LESION.value
    headline = record.headline(no_lesion_seen)
    shown = list(record.descriptors_to_show(no_lesion_seen).values())
    return (f"  {headline}" if headline else "") + (f", {', '.join(shown)} (automatic)" if shown else "")


def _site_check_command(args: argparse.Namespace, config: DeviceConfig) -> int:
    from device.analysis import load_classifier
    from device.site_check import Scored, check_site, read_cases, report_text

    if not (0.5 <= args.target_sensitivity < 1.0 and 0.0 <= args.confidence < 1.0):
        raise ConfigError(f"--target-sensitivity {args.target_sensitivity} must be in [0.5, 1) and --confidence {args.confidence} in [0, 1)")
    classifier = load_classifier(config, args.model)
    manifest = classifier.manifest
    if manifest.decision is None and "malignant" not in manifest.thresholds:
        raise ConfigError(f"model {manifest.name} has no malignant threshold: nothing to check")
    validated = classifier.decision_spec.mode(classifier.mode).malignant_threshold  # the operating mode's
    cases = read_cases(args.cases)

    def score(path: Path) -> Scored:
        output = classify_path(classifier, path, config)
        return Scored(output["p_malignant"], output["inconclusive"])

    report = check_site(cases, score, classifier.malignant_threshold, validated, args.target_sensitivity, args.confidence, mode=classifier.mode.value)
    print(report_text(report))
    return EXIT_OK


def _selftest_command(args: argparse.Namespace, config: DeviceConfig) -> int:
    from device.analysis import load_classifier, load_configured
    from device.selftest import Status, run_selftest
    from device.site_choice import ModelChoice

    chosen: list[ModelChoice] = []

    def load() -> Classifier:
        if args.model is not None:  # --model: the site-bundle record does not apply
            return load_classifier(config, args.model)
        classifier, choice = load_configured(config)
        chosen.append(choice)
        return classifier

    results = run_selftest(load, signature_checked=config.model.public_key is not None, site_choice=lambda: chosen[0] if chosen else None)
    for result in results:
        print(result.line(), flush=True)
    failed = [r.name for r in results if r.status == Status.FAIL]
    print(f"selftest: {'FAIL (' + ', '.join(failed) + ')' if failed else 'PASS'}", flush=True)
    return EXIT_FAILED if failed else EXIT_OK


# --- run -----------------------------------------------------------------------------------------


def _run_command(args: argparse.Namespace, config: DeviceConfig) -> int:
    from device.analysis import Analyzer, install_stop_handlers, load_classifier, run_capture
    from device.link.uplink.heartbeat import write_source_state
    from device.source_state import SourceStateReporter
    from device.sources import open_source
    from device.store import ResultStore

    spec = args.source or config.source.spec
    if config.model.public_key is None:
        log.warning(
            "MODEL SIGNATURE CHECK OFF: [model] public_key is not set, so the bundle %s is loaded without "
            "verifying its signature (a tampered, unsigned or foreign-signed bundle would load); set "
            "[model] public_key to the release's model-signing.pub",
            args.model or config.model.path,
        )
    classifier = load_classifier(config, args.model)
    stop = threading.Event()
    install_stop_handlers(stop)
    source = open_source(spec, config.source)
    progress = _ProgressLine(spec)
    with ResultStore(config.store_path) as store:
        purged = store.purge_frames(config.store.keep_images_days)
        if purged:
            log.info("retention: removed %d frames older than %d days", purged, config.store.keep_images_days)
        analyzer = Analyzer(config, classifier, store)
        log.info(
            "running: source %s, model %s %s (%s), store %s",
            spec,
            classifier.manifest.name,
            classifier.manifest.version,
            classifier.runtime,
            config.store_path,
        )
        resumed: _SkipStored | None = None
        if args.once and not args.rerun and source.finite:
            done = _stored_origins(config.store_path, classifier.manifest.model_sha256)
            source = resumed = _resuming(spec, source, config, done)
        try:
            source.open()
        except SourceError as exc:
            if source.finite:
                raise
            log.warning("%s", exc)  # a live source may come back: run_capture retries
        try:
            reporter = SourceStateReporter(lambda state, detail: write_source_state(analyzer.store, state, detail))
            stats = run_capture(
                source, analyzer, once=args.once, stop=stop, on_result=progress.update, on_error=progress.error, source_state=reporter
            )
        finally:
            source.close()
    progress.finish()
    skipped = f", {resumed.skipped} frames skipped (already stored)" if resumed is not None and resumed.skipped else ""
    print(
        f"done: {stats.frames} frames, {stats.stored} results stored ({stats.inconclusive} inconclusive), "
        f"{stats.errors} errors{skipped} — store {config.store_path}"
    )
    return EXIT_FAILED if stats.errors and not stats.stored else EXIT_OK


def _stored_origins(store_path: Path, model_sha256: str) -> set[str]:
    """Where the results already stored with this model came from (``source``: a file, or ``file#frame=N``)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{store_path}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT source FROM results WHERE model_sha256 = ? AND source IS NOT NULL", (model_sha256,)).fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"result store {store_path}: cannot read what was already classified ({exc})") from exc
    return {str(row[0]) for row in rows}


class _SkipStored(FrameSource):
    """A finite source without the frames already stored with this model: ``run --once`` after a crash (or a
    kill) goes on where it stopped instead of storing a second result for every frame it had done."""

    def __init__(self, description: str, inner: FrameSource | None, done: set[str], skipped: int = 0) -> None:
        super().__init__(description)
        self.inner, self.done, self.skipped = inner, done, skipped  # inner None: everything is stored already
        self.finite = True

    def open(self) -> None:
        if self.inner is not None:
            self.inner.open()

    def read(self) -> Frame | None:
        while self.inner is not None:
            frame = self.inner.read()
            if frame is None or frame.origin not in self.done:
                return frame
            self.skipped += 1
        return None

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()

    @property
    def state(self) -> str:
        return "finished" if self.inner is None else getattr(self.inner, "state", "ready")


def _resuming(spec: str, source: FrameSource, config: DeviceConfig, done: set[str]) -> _SkipStored:
    """``source`` without what is already stored. For a folder, single-image files already classified are left
    out before decoding (the resumed run does not decode them again); frames of DICOM/video files are skipped
    one by one."""
    kind, _, target = spec.partition(":")
    if kind == "folder" and done and not config.source.loop:
        files = list_inputs(Path(target))
        todo = [path for path in files if str(path) not in done]
        log.info(
            "resuming %s: %d of %d files already classified with this model are skipped; already stored (--rerun classifies them again)",
            spec,
            len(files) - len(todo),
            len(files),
        )
        if not todo:
            return _SkipStored(source.description, None, done, skipped=len(files))
        source = FileListSource(source.description, lambda: todo, config.source.dicom_frame, loop=False)
        return _SkipStored(source.description, source, done, skipped=len(files) - len(todo))
    return _SkipStored(source.description, source, done)


class _ProgressLine:
    """A single updating status line on stderr (one line per result when not a terminal)."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.stored = self.errors = 0
        self.tty = sys.stderr.isatty()

    def update(self, record: ResultRecord) -> None:
        self.stored += 1
        said = "inconclusive" if record.inconclusive else (record.category or record.label)  # what the card says
        outline = record.lesion.headline(record.category == Category.NO_LESION.value) if record.lesion is not None else ""
        line = f"[{self.spec}] {self.stored} stored, {self.errors} errors — #{record.seq} {said} ({record.latency_ms:.0f} ms)"
        line += f" — {outline}" if outline else ""
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def error(self, message: str) -> None:
        self.errors += 1
        print(("\n" if self.tty else "") + f"skipped: {message}", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.tty:
            print(file=sys.stderr)


# --- history / export ------------------------------------------------------------------------------


def _history_command(args: argparse.Namespace, config: DeviceConfig) -> int:
    from device.store import ResultStore

    with ResultStore(config.store_path) as store:
        records = store.history(patient_ref=args.patient, limit=args.limit)
        placements = store.placements(records)
    for record in records:
        placement = placements[record.result_id]
        if args.json:
            print(json.dumps({**record.summary(), **placement_summary(placement)}, ensure_ascii=False))
        else:
            label = "INCONCLUSIVE" if record.inconclusive else record.label
            category = f" {record.category}" if record.category and not record.inconclusive else ""
            mal = record.p_malignant if record.p_malignant is not None else record.probabilities.get("malignant")
            mal_text = f" p(malignant) {mal:.2f}" if mal is not None else ""
            mode = f" ({record.mode} mode)" if record.mode else ""
            print(
                f"#{record.seq} {record.created_at} patient={record.patient_ref or '-'} side={record.side or '-'} "
                f"{label}{category}{mal_text}{mode}{_lesion_words(record)} [{record.delivery}]"
                + (f" {placement.words()}" if placement.words() else "")
            )
            for c in placement.corrections:
                print(f"    correction {c.correction_id} {c.words()}{' by ' + c.by if c.by else ''} [{c.delivery}]")
    return EXIT_OK


def _correct_command(args: argparse.Namespace, config: DeviceConfig) -> int:
    from device.link.corrections import CorrectionKind, Place, make_correction
    from device.store import ResultStore

    kind = CorrectionKind.VOID if args.void else CorrectionKind.MOVE
    target = Place(args.move_to, None, args.side) if args.move_to else None
    with ResultStore(config.store_path) as store:
        record = store.get(args.result_id)
        origin = Place(record.exam_id, record.patient_ref, record.side) if record else Place(None, None, None)
        correction = store.add_correction(
            make_correction(
                result_id=args.result_id,
                kind=kind,
                reason=args.reason,
                device_id=config.device.id,
                site=config.device.site,
                origin=origin,
                target=target,
                note=args.note,
                by=args.by,
            )
        )
    print(f"correction {correction.correction_id}: result {correction.result_id} {correction.words()}")
    return EXIT_OK


def _lesion_words(record: ResultRecord) -> str:
    """The stored outline's size for ``device history``: mm only when the spacing was known, else pixels."""
    lesion = record.lesion
    if lesion is None:  # no segmentation model
        return ""
    no_lesion_seen = record.category == Category.NO_LESION.value
    text = lesion.list_text(no_lesion_seen)  # a size, "no lesion outlined", "outlined: recheck" or "" (withheld)
    prefix = "lesion " if lesion.found and not no_lesion_seen else ""
    return f" {prefix}{text}" if text else ""


def placement_summary(placement: Any) -> dict[str, Any]:
    """A result's effective state for JSON output: state, where it belongs now, and its corrections."""
    return {
        "state": placement.state.value,
        "effective": {"exam_id": placement.place.exam_id, "patient_ref": placement.place.patient_ref, "side": placement.place.side},
        "corrections": [
            {
                "correction_id": c.correction_id,
                "kind": c.kind.value,
                "reason": c.reason.value,
                "note": c.note,
                "by": c.by,
                "created_at": c.created_at,
                "delivery": c.delivery,
                "from": vars(c.origin),
                "to": vars(c.target) if c.target else None,
            }
            for c in placement.corrections
        ],
    }


def _export_command(args: argparse.Namespace, config: DeviceConfig) -> int:
    from device.store import ResultStore

    with ResultStore(config.store_path) as store:
        out = open(args.out, "w", encoding="utf-8", newline="") if args.out else sys.stdout
        try:
            count = store.export_csv(out) if args.csv else store.export_json(out)
        finally:
            if args.out:
                out.close()
    log.info("exported %d results", count)
    return EXIT_OK


# --- uplink / demo --------------------------------------------------------------------------------


def _uplink_command(args: argparse.Namespace, config: DeviceConfig) -> int:
    from device.link.uplink.service import run

    return run(config, args.broker)


def _demo_command(args: argparse.Namespace, config: DeviceConfig) -> int:
    from device.demo import write_demo_frames

    paths = write_demo_frames(args.out, args.count)
    print(f"wrote {len(paths)} synthetic scanner screens to {args.out}")
    return EXIT_OK


# --- site-adapt -------------------------------------------------------------------------------------


def _add_site_adapt_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    adapt = commands.add_parser("site-adapt", parents=[common], help="refit the classifier head on this site's normal scans; write a site bundle")
    adapt.add_argument("cases", type=Path, help="folder with labels.csv (filename,label[,patient_id]) and the images")
    adapt.add_argument("--out", type=Path, required=True, help="directory for the site bundle (new or empty)")
    adapt.add_argument("--model", type=Path, help="the base bundle (default: the configured bundle)")
    adapt.add_argument("--site-key", type=Path, help="Ed25519 private key (PEM) that signs the site bundle; without it, it is marked unsigned-site")


def _site_adapt_command(args: argparse.Namespace, config: DeviceConfig) -> int:
    """``device site-adapt``: docs/device.md, "Site onboarding"; the procedure is device/site_adapt.py."""
    from device import site_adapt
    from device.analysis import load_classifier

    classifier = load_classifier(config, args.model or config.model.path)  # the base: never the chosen site bundle
    tty = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if tty or done == total or done % 25 == 0:
            print(("\r" if tty else "") + f"reading cases: {done}/{total}", end="" if tty and done < total else "\n", file=sys.stderr, flush=True)

    adaptation, bundle = site_adapt.run(classifier, args.cases, args.out, args.site_key, AnalysisOptions.from_config(config), progress)
    print(site_adapt.report_text(adaptation))
    signing = adaptation_signing(bundle)
    print(f"site bundle: {args.out} — {bundle.manifest.name} {bundle.manifest.version} ({signing})")
    print(f"to use it on this device: python -m device site-bundle use {args.out.resolve()}")
    return EXIT_OK


def _add_site_bundle_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    site = commands.add_parser(
        "site-bundle", parents=[common], help="the site bundle this device runs instead of [model] path (kept in the data dir)"
    )
    actions = site.add_subparsers(dest="site_bundle_command", required=True)
    actions.add_parser("show", parents=[common], help="which bundle runs, and why")
    use = actions.add_parser("use", parents=[common], help="run this site bundle (made from the configured bundle)")
    use.add_argument("bundle", type=Path, metavar="DIR")
    actions.add_parser("undo", parents=[common], help="back to the configured bundle")


def _site_bundle_command(args: argparse.Namespace, config: DeviceConfig) -> int:
    """``device site-bundle``: the app-owned record of device/site_choice.py (the configuration is never written)."""
    from device import site_choice

    if args.site_bundle_command == "use":
        choice = site_choice.use_site_bundle(config, args.bundle)
        print(
            f"site bundle {choice.site.text()} in use from the next start of the app or command ({site_choice.record_file(config.device.data_dir)})"
        )
    elif args.site_bundle_command == "undo":
        removed = site_choice.undo_site_bundle(config)
        print(
            f"back to the configured bundle {config.model.path}"
            if removed
            else f"no site bundle was chosen: the configured bundle {config.model.path} runs"
        )
    else:
        chosen = site_choice.choose_bundle(config)
        print(chosen.text())
        return EXIT_FAILED if chosen.warning else EXIT_OK
    return EXIT_OK


def adaptation_signing(bundle: Any) -> str:
    """How a site bundle is signed, as its manifest records it (``head.site.signing``)."""
    head = getattr(bundle.manifest, "head", None)
    return str(head.site.get("signing", "unsigned-site")) if head is not None else "not a site bundle"
