"""Uplink/hub benchmark: backlog flush device -> broker -> hub database over loopback, hub ingest rate
(SQLite, PostgreSQL), and the uplink process's memory.

    python -m bench.bench_uplink [--results 10000] [--window 64 256] [--no-postgres]

Real processes: Mosquitto on a free loopback port, ``python -m hub serve``, ``python -m device uplink``.
The flush clock starts when the uplink is launched (process start-up included) and stops when the
device's outbox is empty, i.e. every result is stored at the hub and its ack recorded on the device.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import psutil

from device.contract import ResultMessage
from hub.store import HubStore
from tests.mqtt_broker import MosquittoBroker, PostgresServer, postgres_bindir, wait_for
from tests.test_uplink import Device, Hub, make_record


def flush(root: Path, n: int, window: int, db: str | None) -> None:
    broker = MosquittoBroker(root / "broker")
    broker.start()
    hub = Hub(root, broker.address)
    if db:
        hub.db = db  # type: ignore[assignment]
        hub.store = HubStore.open(db)
    device = Device(root, "site-a", f"bench-w{window}", broker.address, window=window, ack_timeout_s=10.0,
                    heartbeat_s=5.0)
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
    count = hub.store.count_results(device_id=device.device_id)
    print(f"flush   {n:>6} results  window {window:>4}  hub {hub.store.backend:10}  {elapsed:6.2f} s  "
          f"{n / elapsed:7.0f} results/s  (hub holds {count})  uplink peak RSS {peak / 2**20:5.1f} MiB  "
          f"[storing them on the device took {stored_s:.1f} s]", flush=True)
    device.stop_uplink()
    hub.stop()
    broker.stop()


def ingest(target: str, n: int, batch: int) -> None:
    messages = [ResultMessage.from_record(replace(make_record("site-a", "dev-1", i), seq=i + 1), historical=False,
                                          prev_result_id=None) for i in range(n)]
    with HubStore.open(target) as store:
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            store.add_results(messages[start:start + batch])
        elapsed = time.perf_counter() - t0
        print(f"ingest  {n:>6} results  batch {batch:>4}  {store.backend:10}  {elapsed:6.2f} s  "
              f"{n / elapsed:7.0f} results/s (HubStore.add_results, one transaction per batch)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=int, default=10_000)
    parser.add_argument("--window", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="sonopi-bench-"))
    pg = None
    try:
        if not args.no_postgres and postgres_bindir() is not None:
            pg = PostgresServer().start()
        for batch in (20, 500):
            ingest(str(root / f"ingest-{batch}.sqlite"), args.results, batch)
            if pg:
                ingest(pg.create_database(f"ingest_{batch}"), args.results, batch)
        for window in args.window:
            flush(root / f"sqlite-w{window}", args.results, window, None)
        if pg:
            flush(root / "pg", args.results, max(args.window), pg.create_database("flush"))
    finally:
        if pg:
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
