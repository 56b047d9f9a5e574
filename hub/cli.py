"""``python -m hub``: serve, and operator commands on the hub database.

python -m hub serve [--config FILE] [--broker HOST:PORT] [--db PATH|DSN]
python -m hub results [--site S] [--device D] [--label malignant] [--since ISO] [--limit N] [--watch] [--json]
python -m hub devices [--json]
python -m hub rejections [--json]
python -m hub export (--csv | --json) [--out FILE] [filters]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Iterable
from typing import IO, Any, TypedDict

from device.errors import SonopiError
from device.link.corrections import Placement, State
from hub.config import DEFAULT_TOML, HubConfig, load_hub_config
from hub.store import RECONNECT_MAX_S, RECONNECT_MIN_S, DatabaseUnavailable, HubStore, StoredResult
from hub.web import cli as web_cli

log = logging.getLogger(__name__)

EXPORT_FIELDS = (
    "id",
    "result_id",
    "seq",
    "site",
    "device_id",
    "created_at",
    "received_at",
    "historical",
    "exam_id",
    "patient_ref",
    "side",
    "clock",
    "age",
    "model_name",
    "model_version",
    "model_sha256",
    "label",
    "inconclusive",
    "reasons",
    "probabilities",
    "thresholds",
    "latency_ms",
    "has_thumbnail",
    "schema",
    "category",
    "p_malignant",
    "mode",
    "lesion",
    "crop",
    "state",
    "effective_exam_id",
    "effective_patient_ref",
    "effective_side",  # the clinician's corrections
)


def placement_fields(placement: Placement) -> dict[str, Any]:
    """A result's effective state after the clinician's corrections: valid, voided, or moved (and where to)."""
    return {
        "state": placement.state.value,
        "effective_exam_id": placement.place.exam_id,
        "effective_patient_ref": placement.place.patient_ref,
        "effective_side": placement.place.side,
    }


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="hub configuration (TOML)")
    common.add_argument("--db", help="SQLite path or PostgreSQL DSN; overrides [db] target")
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--site")
    filters.add_argument("--device")
    filters.add_argument("--label", help="e.g. malignant, benign, or inconclusive")
    filters.add_argument("--since", help="created at or after this ISO 8601 time (UTC), e.g. 2026-01-31")
    filters.add_argument("--until", help="created before this ISO 8601 time")
    filters.add_argument("--patient", help="patient reference")

    parser = argparse.ArgumentParser(prog="python -m hub", description="sonopi hospital hub")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", parents=[common], help="receive results from devices")
    serve.add_argument("--broker", help="HOST:PORT; overrides [mqtt] broker")
    results = sub.add_parser("results", parents=[common, filters], help="list stored results, newest first")
    results.add_argument("--limit", type=int, default=50)
    results.add_argument("--watch", action="store_true", help="then keep printing new results as they arrive")
    results.add_argument("--json", action="store_true", help="one JSON object per result")
    devices = sub.add_parser("devices", parents=[common], help="devices: last seen, presence, backlog, model")
    devices.add_argument("--json", action="store_true")
    rejections = sub.add_parser("rejections", parents=[common], help="rejected messages by reason")
    rejections.add_argument("--json", action="store_true")
    export = sub.add_parser("export", parents=[common, filters], help="export stored results")
    fmt = export.add_mutually_exclusive_group(required=True)
    fmt.add_argument("--csv", action="store_true")
    fmt.add_argument("--json", action="store_true", help="JSON lines")
    export.add_argument("--out", help="file (default: stdout)")
    sub.add_parser("config-default", help="print an example hub configuration")
    web_cli.add_commands(sub, common)  # web console: `web`, `user ...` (hub/web/cli.py)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.command == "config-default":
        print(DEFAULT_TOML, end="")
        return 0
    try:
        config = load_hub_config(args.config)
        target = args.db or config.db.target
        if args.command in web_cli.COMMANDS:
            return web_cli.run(args, target)
        if args.command == "serve":
            return _serve(config, target, args.broker)
        with HubStore.open(target) as store:
            if args.command == "results":
                return _results(store, args)
            if args.command == "devices":
                return _devices(store, args.json)
            if args.command == "rejections":
                return _rejections(store, args.json)
            return _export(store, args)
    except SonopiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130


def _serve(config: HubConfig, target: str, broker: str | None) -> int:
    from hub.service import HubService

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    store = _open_when_up(target, stop)
    if store is None:
        return 0
    with store:
        service = HubService(config, store, broker)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: service.stop())
        return 0 if stop.is_set() else service.serve()


def _open_when_up(target: str, stop: threading.Event) -> HubStore | None:
    """The hub's database; while the PostgreSQL server cannot be reached (restarting, or starting after the hub), the
    same doubling wait as a running hub's reconnect (0.5 ... 30 s). None if stopped meanwhile. Other errors (a SQLite
    path that cannot be opened, a schema newer than this software) still end ``hub serve`` at once."""
    delay = RECONNECT_MIN_S
    while True:
        try:
            return HubStore.open(target)
        except DatabaseUnavailable as exc:
            log.error("hub: %s; waiting for the database, next attempt in %.1fs", exc, delay)
        if stop.wait(delay):
            return None
        delay = min(delay * 2, RECONNECT_MAX_S)


class _Filters(TypedDict):
    """The command line's result filters, as HubStore.results takes them."""

    site: str | None
    device_id: str | None
    label: str | None
    since: str | None
    until: str | None
    patient_ref: str | None


def _filters(args: argparse.Namespace) -> _Filters:
    return {"site": args.site, "device_id": args.device, "label": args.label, "since": args.since, "until": args.until, "patient_ref": args.patient}


def _results(store: HubStore, args: argparse.Namespace) -> int:
    rows = list(reversed(store.results(**_filters(args), limit=args.limit)))
    if not args.json:
        print(f"{'received':24} {'site/device':28} {'seq':>6} {'patient':12} {'side':4} {'clock':5} {'age':3} {'label':12} {'p':>5} model")
    last_id = max((r.id for r in rows), default=None)
    _print_results(store, rows, args.json)
    if not args.watch:
        return 0
    if last_id is None:
        last_id = max((r.id for r in store.results(limit=1)), default=0)
    while True:
        time.sleep(1.0)
        new = store.results(**_filters(args), after_id=last_id, limit=None, newest_first=False)
        if new:
            _print_results(store, new, args.json)
            last_id = new[-1].id


def _print_results(store: HubStore, rows: Iterable[StoredResult], as_json: bool) -> None:
    rows = list(rows)
    placements = store.placements(rows)
    for r in rows:
        placement = placements[r.result_id]
        if as_json:
            print(json_line(r.summary() | placement_fields(placement), f"result {r.result_id}"), flush=True)
            continue
        label = "inconclusive" if r.inconclusive else (r.category or r.label or "")  # category: contract v2
        p = r.p_malignant if r.p_malignant is not None else r.probabilities.get("malignant", 0.0)
        late = " (late)" if r.historical else ""
        print(
            f"{r.received_at:24} {r.site + '/' + r.device_id:28} {r.seq:>6} {r.patient_ref or '-':12} "
            f"{r.side or '-':4} {_or_dash(r.clock):5} {_or_dash(r.age):3} {label:12} {p:5.2f} {r.model_name} {r.model_version}{late}"
            f"{_corrected(placement)}",
            flush=True,
        )


def _corrected(placement: Placement) -> str:
    return "" if placement.state is State.VALID else f"  [{placement.words()}]"


def _or_dash(value: int | None) -> str:
    return "-" if value is None else str(value)


def _devices(store: HubStore, as_json: bool) -> int:
    devices = store.devices()
    if as_json:
        for d in devices:
            print(json_line(d.summary(), f"device {d.site}/{d.device_id}"))
        return 0
    print(f"{'site/device':28} {'presence':9} {'last seen':24} {'backlog':>7} {'temp':>5} {'p50 ms':>7} model")
    for d in devices:
        model = f"{d.model_name} {d.model_version}" if d.model_name else "-"
        temp = f"{d.soc_temp_c:.0f}" if d.soc_temp_c is not None else "-"
        p50 = f"{d.latency_p50_ms:.0f}" if d.latency_p50_ms is not None else "-"
        backlog = d.backlog if d.backlog is not None else "-"
        print(f"{d.site + '/' + d.device_id:28} {d.presence():9} {d.last_seen:24} {backlog:>7} {temp:>5} {p50:>7} {model}")
    return 0


def _rejections(store: HubStore, as_json: bool) -> int:
    for r in store.rejections():
        if as_json:
            print(json_line(r.__dict__, f"rejection {r.reason}"))
        else:
            print(f"{r.count:>8} {r.reason:16} {r.site or '?'}/{r.device_id or '?'} last {r.last_at}: {r.last_detail}")
    return 0


def _export(store: HubStore, args: argparse.Namespace) -> int:
    out: IO[str] = open(args.out, "w", encoding="utf-8", newline="") if args.out else sys.stdout
    try:
        count = _write_export(store, args, out)
    finally:
        if args.out:
            out.close()
    print(f"exported {count} results", file=sys.stderr)
    return 0


def _write_export(store: HubStore, args: argparse.Namespace, out: IO[str]) -> int:
    writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS) if args.csv else None
    if writer:
        writer.writeheader()
    count, after = 0, 0
    while True:
        page = store.results(**_filters(args), after_id=after, limit=1000, newest_first=False)
        if not page:
            return count
        placements = store.placements(page)
        for r in page:
            row = r.summary() | placement_fields(placements[r.result_id])
            if writer:
                model = row.pop("model")
                row.update(model_name=model["name"], model_version=model["version"], model_sha256=model["sha256"])
                for key in ("reasons", "probabilities", "thresholds"):
                    row[key] = json.dumps(row[key], ensure_ascii=False)
                for key in ("lesion", "crop"):  # contract v3, optional: compact JSON, empty when not sent
                    row[key] = json.dumps(row[key], ensure_ascii=False, separators=(",", ":")) if row[key] is not None else None
                writer.writerow({k: row[k] for k in EXPORT_FIELDS})
            else:
                out.write(json_line(row, f"result {r.result_id}") + "\n")
            count += 1
        after = page[-1].id


def json_line(value: dict, what: str) -> str:
    """One line of strict JSON. A non-finite number (stored by a hub older than issue 17's bounds) is written
    as null, with a warning naming the row: NaN and Infinity are not JSON."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError:
        log.warning("%s holds a non-finite number (stored before the contract bounded numbers); written as null", what)
        return json.dumps(_finite(value), ensure_ascii=False, allow_nan=False)


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
