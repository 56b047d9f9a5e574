"""``python -m bench.bench_corrections``: what leaving voided results out of the console's queue costs.

100,000 synthetic results (bench/bench_web.py's seed, SQLite) are paged through ``hub.web.inbox.Inbox`` (the
queries the inbox page runs, without HTTP) with no correction, then again after 1,000 voids of the results at the
top of the attention queue (the worst case: the first page must walk past every one of them) and 1,000 moves;
also the trail lookup of one result page and of a 50-frame exam page. Prints p50/p95 per case (figures go to
docs/performance.md); not a test.
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.bench_web import seed
from device.link.contract import CorrectionMessage
from device.link.corrections import CorrectionKind, CorrectionReason, Place, new_correction_id
from hub.store import HubStore
from hub.web.corrections_view import exam_corrections, trails
from hub.web.db import WebDb
from hub.web.inbox import Filters, Inbox, Queue, Sort

log = logging.getLogger("bench.corrections")
RESULTS, VOIDS, MOVES, RUNS = 100_000, 1_000, 1_000, 40


def timed(fn: Callable[[], object], runs: int = RUNS) -> tuple[float, float]:
    for _ in range(3):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.95 * (len(samples) - 1))]


def cases(inbox: Inbox, store: HubStore, sample: list[str]) -> dict[str, tuple[float, float]]:
    return {
        "inbox, needs attention (50)": timed(lambda: inbox.page(Queue(Filters(), Sort.ATTENTION))),
        "inbox, by risk (50)": timed(lambda: inbox.page(Queue(Filters(), Sort.RISK))),
        "inbox, newest first (50)": timed(lambda: inbox.page(Queue(Filters(), Sort.NEWEST))),
        "inbox, label=malignant (50)": timed(lambda: inbox.page(Queue(Filters(label="malignant"), Sort.ATTENTION))),
        "trail of one result": timed(lambda: trails(store, sample[:1])),
        "trails of a 50-frame exam": timed(lambda: exam_corrections(store, "NO-MOVES-IN", sample[:50])),
        f"exam with {MOVES:,} results moved in": timed(lambda: exam_corrections(store, "BENCH-EXAM", []), runs=10),
    }


def correct(store: HubStore, inbox: Inbox) -> list[str]:
    """Void the top of the attention queue, move the next ones; returns the ids corrected."""
    top = inbox.page(Queue(Filters(), Sort.ATTENTION), size=VOIDS + MOVES).rows
    results = store.results_by_id([r.result_id for r in top])
    ids = []
    for n, row in enumerate(top):
        r = results[row.result_id]
        void = n < VOIDS
        store.add_correction(
            CorrectionMessage(
                correction_id=new_correction_id(),
                seq=n + 1,
                result_id=r.result_id,
                device_id=r.device_id,
                site=r.site,
                created_at=r.created_at,
                kind=CorrectionKind.VOID if void else CorrectionKind.MOVE,
                reason=CorrectionReason.POOR_IMAGE if void else CorrectionReason.WRONG_PATIENT,
                origin=Place(r.exam_id, r.patient_ref, r.side),
                target=None if void else Place("BENCH-EXAM", "P-BENCH", "R"),
            )
        )
        ids.append(r.result_id)
    return ids


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="sonopi-bench-corr-") as tmp:
        target = str(Path(tmp) / "hub.sqlite")
        seed(target, RESULTS)
        store, db = HubStore.open(target), WebDb.open(target)
        inbox = Inbox(db)
        sample = [r.result_id for r in inbox.page(Queue(Filters(), Sort.ATTENTION), size=50).rows]
        before = cases(inbox, store, sample)
        started = time.perf_counter()
        corrected = correct(store, inbox)
        log.info("stored %d corrections in %.1f s", len(corrected), time.perf_counter() - started)
        with db.transaction() as tx:
            tx.execute("ANALYZE")
        after = cases(inbox, store, corrected)
        first = inbox.page(Queue(Filters(), Sort.ATTENTION)).rows
        assert not set(r.result_id for r in first) & set(corrected[:VOIDS]), "a voided result is in the queue"
        print(f"{RESULTS:,} results, SQLite; {RUNS} runs per case; p50 / p95 ms")
        print(f"{'case':32} {'no corrections':>18} {f'{VOIDS:,} voids + {MOVES:,} moves':>26}")
        for name in before:
            b, a = before[name], after[name]
            print(f"{name:32} {b[0]:8.1f} / {b[1]:6.1f} {a[0]:14.1f} / {a[1]:6.1f}")
        store.close()
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
