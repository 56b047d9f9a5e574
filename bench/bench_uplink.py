"""Uplink/hub benchmark: backlog flush device -> broker -> hub database over loopback, hub ingest rate
(SQLite, PostgreSQL), and the uplink process's memory.

    python -m bench.bench_uplink [--results 10000] [--window 64 256] [--no-postgres] [--only-flush] [--micro]

Real processes: Mosquitto on a free loopback port, ``python -m hub serve``, ``python -m device uplink``.
The flush clock starts when the uplink is launched (process start-up included) and stops when the
device's outbox is empty, i.e. every result is stored at the hub and its ack recorded on the device.
With PostgreSQL, the same flush also goes to two ``hub serve`` processes on one database with ``[mqtt] shared_group``
(docs/hub.md, "A second hub"), printed with its ratio to the one-hub PostgreSQL run just before it.

``--micro``: the per-message CPU cost of the contract and the store without processes or sockets — the uplink's
``encode_result``, the hub's ``decode_result`` and ``HubStore.add_results`` (SQLite, batches of 500) — for the
contract's compiled schema check against the ``jsonschema`` check it replaced, in interleaved rounds (the machine's
load moves both alike); printed as µs per message and the ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import fastjsonschema
import jsonschema
import psutil

from device.link import contract
from device.link.contract import decode_result, encode_result, topic
from device.link.uplink.outbox import message_from_record
from hub.store import HubStore
from tests.device.link.test_uplink import Device, Hub, make_record
from tests.hub.test_hub_poison import HubProcess
from tests.mqtt_broker import MosquittoBroker, PostgresServer, postgres_bindir, wait_for


def flush(root: Path, n: int, window: int, db: str | None) -> float:
    broker = MosquittoBroker(root / "broker")
    broker.start()
    hub = Hub(root, broker.address)
    if db:
        hub.db = db  # type: ignore[assignment]
        hub.store = HubStore.open(db)
    device = Device(root, "site-a", f"bench-w{window}", broker.address, window=window, ack_timeout_s=10.0, heartbeat_s=5.0)
    t0 = time.perf_counter()
    for start in range(0, n, 1000):
        device.add(min(1000, n - start))
    stored_s = time.perf_counter() - t0
    hub.start()
    wait_for(lambda: "hub: connected to" in hub.log(), 20, "the hub to connect")  # before the clock starts
    t0 = time.perf_counter()
    device.start_uplink()
    proc = psutil.Process(device.proc.pid)
    peak = 0
    while device.store.backlog().pending:
        try:
            peak = max(peak, proc.memory_info().rss)
        except psutil.NoSuchProcess:
            raise SystemExit(f"uplink died:\n{device.log()}") from None
        time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    cpu = _cpu_ms_per_result([hub.proc, device.proc], n)
    count = hub.store.count_results(device_id=device.device_id)
    print(
        f"flush   {n:>6} results  window {window:>4}  hub {hub.store.backend:10}  {elapsed:6.2f} s  "
        f"{n / elapsed:7.0f} results/s  (hub holds {count})  CPU ms/result hub {cpu[0]:.2f} uplink {cpu[1]:.2f}  "
        f"uplink peak RSS {peak / 2**20:5.1f} MiB  "
        f"[storing them on the device took {stored_s:.1f} s]",
        flush=True,
    )
    device.stop_uplink()
    hub.stop()
    broker.stop()
    return n / elapsed


def flush_two_hubs(root: Path, n: int, window: int, dsn: str, baseline: float | None) -> float:
    """The same flush into two ``hub serve`` processes sharing one PostgreSQL database and ``[mqtt] shared_group``
    (docs/hub.md, "A second hub"): the broker hands each result to one of them."""
    broker = MosquittoBroker(root / "broker")
    broker.start()
    hubs = [HubProcess(root / name, broker.address, dsn, f'[mqtt]\nclient_id = "{name}"\nshared_group = "hubs"\n') for name in ("hub-a", "hub-b")]
    device = Device(root, "site-a", f"bench2-w{window}", broker.address, window=window, ack_timeout_s=10.0, heartbeat_s=5.0)
    for start in range(0, n, 1000):
        device.add(min(1000, n - start))
    for hub in hubs:
        hub.start()
    for hub in hubs:
        wait_for(lambda h=hub: "hub: connected to" in h.log(), 20, "the hubs to connect")
    t0 = time.perf_counter()
    device.start_uplink()
    while device.store.backlog().pending:
        if device.proc is None or device.proc.poll() is not None:
            raise SystemExit(f"uplink died:\n{device.log()}")
        time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    cpu = _cpu_ms_per_result([hub.proc for hub in hubs] + [device.proc], n)
    device.stop_uplink()
    for hub in hubs:
        hub.stop()
    count = hubs[0].store.count_results(device_id=device.device_id)
    shares = [_stored_by(hub) for hub in hubs]
    ratio = f"  {n / elapsed / baseline:4.2f}x the one-hub PostgreSQL run" if baseline else ""
    print(
        f"flush   {n:>6} results  window {window:>4}  hub 2 x postgresql  {elapsed:6.2f} s  {n / elapsed:7.0f} results/s  "
        f"(hubs hold {count}; stored by each {shares}; deferred {sum(_counter(h, 'deferred') for h in hubs)})  "
        f"CPU ms/result hubs {cpu[0]:.2f} + {cpu[1]:.2f} uplink {cpu[2]:.2f}{ratio}",
        flush=True,
    )
    for hub in hubs:
        hub.close()
    broker.stop()
    return n / elapsed


def _cpu_ms_per_result(procs: list, n: int) -> list[float]:  # type: ignore[type-arg]
    """Each process's CPU time so far (user + system, start-up included) per result, in ms: a figure the machine's
    other load moves much less than the wall-clock rate (it says how fast an idle machine could go)."""
    out = []
    for proc in procs:
        times = psutil.Process(proc.pid).cpu_times()
        out.append(1000 * (times.user + times.system) / n)
    return out


def _counters(hub: HubProcess) -> dict[str, int]:
    """The last ``hub: counters {...}`` line the hub logged (it logs one at exit)."""
    lines = [line for line in hub.log().splitlines() if "hub: counters " in line]
    return json.loads(lines[-1].split("hub: counters ", 1)[1]) if lines else {}


def _counter(hub: HubProcess, name: str) -> int:
    return int(_counters(hub).get(name, 0))


def _stored_by(hub: HubProcess) -> int:
    """Results this hub inserted: on arrival, or from the shared reorder buffer (received by the other hub)."""
    return _counter(hub, "stored") + _counter(hub, "stored_after_waiting")


def ingest(target: str, n: int, batch: int) -> None:
    messages = [message_from_record(replace(make_record("site-a", "dev-1", i), seq=i + 1), historical=False, prev_result_id=None) for i in range(n)]
    with HubStore.open(target) as store:
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            store.add_results(messages[start : start + batch])
        elapsed = time.perf_counter() - t0
        print(
            f"ingest  {n:>6} results  batch {batch:>4}  {store.backend:10}  {elapsed:6.2f} s  "
            f"{n / elapsed:7.0f} results/s (HubStore.add_results, one transaction per batch)",
            flush=True,
        )


@contextlib.contextmanager
def jsonschema_check() -> Iterator[None]:
    """The contract's schema check as it was before fastjsonschema: jsonschema's ``iter_errors`` on every message."""

    def compiled(kind: str):  # type: ignore[no-untyped-def]
        validator = contract._validator(kind)

        def check(payload: dict) -> None:  # type: ignore[type-arg]
            if jsonschema.exceptions.best_match(validator.iter_errors(payload)) is not None:
                raise fastjsonschema.JsonSchemaValueException("refused")

        return check

    saved = contract._compiled
    contract._compiled = compiled  # type: ignore[assignment]
    try:
        yield
    finally:
        contract._compiled = saved


def micro(root: Path, n: int, rounds: int = 5) -> None:
    """µs of CPU per message for encode (uplink), decode (hub) and store (SQLite), old check against new."""
    messages = [message_from_record(replace(make_record("site-a", "dev-1", i), seq=i + 1), historical=False, prev_result_id=None) for i in range(n)]
    name = topic("site-a", "dev-1", "result")
    timings: dict[str, dict[str, list[float]]] = {"jsonschema": {}, "compiled": {}}
    for r in range(rounds):
        for label in ("jsonschema", "compiled") if r % 2 == 0 else ("compiled", "jsonschema"):
            with jsonschema_check() if label == "jsonschema" else contextlib.nullcontext():
                t0 = time.process_time()
                data = [encode_result(m) for m in messages]
                t1 = time.process_time()
                decoded = [decode_result(name, d) for d in data]
                t2 = time.process_time()
                with HubStore.open(root / f"micro-{label}-{r}.sqlite") as store:
                    for start in range(0, n, 500):
                        store.add_results(decoded[start : start + 500])
                t3 = time.process_time()
            for part, seconds in (("encode", t1 - t0), ("decode", t2 - t1), ("store", t3 - t2), ("all", t3 - t0)):
                timings[label].setdefault(part, []).append(1e6 * seconds / n)
    for part in ("encode", "decode", "store", "all"):
        old, new = (statistics.median(timings[label][part]) for label in ("jsonschema", "compiled"))
        print(
            f"micro   {n:>6} results  {part:6}  jsonschema {old:7.1f} µs/result  compiled {new:7.1f} µs/result  "
            f"({old / new:4.1f}x; CPU time, median of {rounds} interleaved rounds)",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=int, default=10_000)
    parser.add_argument("--window", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--only-flush", action="store_true", help="skip the hub-ingest runs")
    parser.add_argument("--micro", action="store_true", help="only the per-message CPU cost, old check against new")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="sonopi-bench-"))
    if args.micro:
        try:
            micro(root, min(args.results, 2000))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return 0
    pg = None
    try:
        if not args.no_postgres and postgres_bindir() is not None:
            pg = PostgresServer().start()
        for batch in () if args.only_flush else (20, 500):
            ingest(str(root / f"ingest-{batch}.sqlite"), args.results, batch)
            if pg:
                ingest(pg.create_database(f"ingest_{batch}"), args.results, batch)
        for window in args.window:
            flush(root / f"sqlite-w{window}", args.results, window, None)
        if pg:
            one = flush(root / "pg", args.results, max(args.window), pg.create_database("flush"))
            flush_two_hubs(root / "pg-two", args.results, max(args.window), pg.create_database("flush_two"), one)
    finally:
        if pg:
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
