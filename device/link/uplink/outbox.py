"""The sending side of store-and-forward: which stored results go out next, and when to re-send.

The device's :class:`~device.store.ResultStore` is the outbox (it survives power loss); this class only
keeps the in-flight window in memory. Rules:

* results go out in ``seq`` order, at most ``window`` un-acknowledged at a time;
* only the hub's ack (``mark_acked``) takes a result out of the outbox — a PUBACK only means the
  broker has it;
* each message names the previous result still awaiting an ack (``prev_result_id``); the hub stores a
  result only once that one is stored, so results are stored in order even when one is lost in transit;
* go-back-N: when the oldest in-flight result has waited ``ack_timeout_s``, or the connection drops,
  the window is emptied and sending restarts from the oldest un-acknowledged result;
* the hub's nack (``rejected``) parks a result for good in the store and rewinds at once: the results
  sent after it named it as their predecessor, which the hub will never store, so they go out again
  with a chain that leaves it out;
* back-off: after an ack timeout the window shrinks to one result (a probe: the oldest un-acknowledged) and
  each further timeout doubles the wait, up to ``ack_backoff_max_s`` (default 32 x ``ack_timeout_s``, at most
  an hour). While the hub is down the broker so queues one copy per wait, not a window per timeout. The
  first ack (or nack) that arrives restores the full window and ``ack_timeout_s``; a reconnect keeps the
  back-off (the hub may still be down: the probe finds out);
* an ack that cannot be recorded (the store fails) leaves its results in flight: they time out and are
  re-sent like any un-acknowledged result, without waiting for a reconnect.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from device.link.contract import (
    MAX_THUMBNAIL_BYTES,
    RESULT_SCHEMA_VERSION,
    ContractError,
    Refusal,
    ResultMessage,
    encode_result,
)
from device.results import ResultRecord
from device.store import ResultStore

log = logging.getLogger(__name__)


def message_from_record(
    record: ResultRecord,
    *,
    historical: bool,
    prev_result_id: str | None,
    send_thumbnail: bool = True,
    thumbnail_max_bytes: int = MAX_THUMBNAIL_BYTES,
) -> ResultMessage:
    """The contract message for a stored result (the record -> message conversion: the contract itself knows
    nothing of the device's records)."""
    if record.seq is None:
        raise ValueError("a result must be stored (have a seq) before it is sent")
    thumb = record.thumbnail
    version = result_schema_for(record)
    if not send_thumbnail or thumb is None or len(thumb) > min(thumbnail_max_bytes, MAX_THUMBNAIL_BYTES):
        thumb = None
    return ResultMessage(
        result_id=record.result_id,
        seq=record.seq,
        device_id=record.device_id,
        site=record.site,
        created_at=record.created_at,
        model_name=record.model_name,
        model_version=record.model_version,
        model_sha256=record.model_sha256,
        probabilities=dict(record.probabilities),
        label=record.label,
        inconclusive=record.inconclusive,
        reasons=tuple(record.reasons),
        thresholds=dict(record.thresholds),
        exam_id=record.exam_id,
        patient_ref=record.patient_ref,
        side=record.side,
        latency_ms=record.latency_ms,
        historical=historical,
        prev_result_id=prev_result_id,
        thumbnail=thumb,
        category=record.category,
        p_malignant=record.p_malignant,
        mode=record.mode,
        # a result stored before the category rule travels as v1, which has no clock/age (such a result was
        # stored before the clock and age columns too, so it has none to lose)
        clock=record.clock if record.category is not None else None,
        age=record.age if record.category is not None else None,
        # the outline and the crop box that maps it onto the thumbnail: schema 3, only for a result stored with an
        # outline (lesion None: no segmentation model, or stored before outlines -> schema 2, as it always was)
        lesion=record.lesion if version >= 3 else None,
        crop=record.crop if version >= 3 else None,
        schema=version,
    )


def result_schema_for(record: ResultRecord) -> int:
    """The lowest result schema that holds what ``record`` stores: 3 with a lesion outline, 2 with a category,
    else 1 (a result stored before the category rule)."""
    if record.category is None:
        return 1
    return RESULT_SCHEMA_VERSION if record.lesion is not None else 2


@dataclass(frozen=True)
class InFlight:
    seq: int
    sent_at: float  # monotonic


BACKOFF_FACTOR = 32  # the longest wait for an ack is this many ack timeouts (16 min at the default 30 s)...
BACKOFF_MAX_S = 3600.0  # ...and never more than an hour


class Outbox:
    def __init__(
        self,
        store: ResultStore,
        *,
        window: int,
        ack_timeout_s: float,
        send_thumbnail: bool,
        thumbnail_max_bytes: int,
        ack_backoff_max_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.window = window
        self.ack_timeout_s = ack_timeout_s
        if ack_backoff_max_s is None:
            ack_backoff_max_s = min(BACKOFF_FACTOR * ack_timeout_s, BACKOFF_MAX_S)
        self.ack_backoff_max_s = max(ack_timeout_s, ack_backoff_max_s)
        self._backoff = 0  # consecutive ack timeouts without an ack in between
        self.send_thumbnail = send_thumbnail
        self.thumbnail_max_bytes = thumbnail_max_bytes
        self._clock = clock
        self._in_flight: OrderedDict[str, InFlight] = OrderedDict()
        self._cursor = 0  # highest seq handed out since the last rewind
        self._last_sent_id: str | None = None
        self.unsendable: set[str] = set()  # stored results that break the contract (logged once)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def effective_window(self) -> int:
        """``window``, or 1 (a probe) while backing off."""
        return self.window if self._backoff == 0 else 1

    @property
    def current_timeout_s(self) -> float:
        """How long the oldest in-flight result may wait for its ack now: doubling with each timeout, capped."""
        return min(self.ack_timeout_s * (1 << min(self._backoff, 30)), self.ack_backoff_max_s)

    @property
    def backing_off(self) -> bool:
        return self._backoff > 0

    def free_slots(self) -> int:
        return max(0, self.effective_window - len(self._in_flight))

    def next_messages(self, *, historical_before: str) -> list[tuple[ResultMessage, bytes]]:
        """Up to the free window of results to publish now, in seq order, with their encoded payloads.

        ``historical_before``: results created before this ISO time (i.e. before the current connection
        came up) are flagged ``historical``. A stored result that breaks the contract cannot be sent: it is
        logged (once) and skipped, and stays in the store for an operator to look at."""
        slots = self.free_slots()
        if slots == 0:
            return []
        out: list[tuple[ResultMessage, bytes]] = []
        for record in self.store.pending(limit=slots, after_seq=self._cursor):
            self._cursor = max(self._cursor, record.seq or 0)
            prev = self._last_sent_id if self._last_sent_id in self._in_flight else None
            try:
                message = message_from_record(
                    record,
                    historical=record.created_at < historical_before,
                    prev_result_id=prev,
                    send_thumbnail=self.send_thumbnail,
                    thumbnail_max_bytes=self.thumbnail_max_bytes,
                )
                payload = encode_result(message)
            except (ContractError, ValueError) as exc:
                if record.result_id not in self.unsendable:
                    self.unsendable.add(record.result_id)
                    log.error("uplink: result %s (seq %s) breaks the contract and is not sent: %s", record.result_id, record.seq, exc)
                continue
            self._in_flight[record.result_id] = InFlight(seq=message.seq, sent_at=self._clock())
            self._last_sent_id = record.result_id
            out.append((message, payload))
        return out

    def sent(self, result_ids: Iterable[str]) -> None:
        """Record in the store that these were handed to the broker (delivery: stored -> sent)."""
        self.store.mark_sent(result_ids)

    def acked(self, result_ids: Iterable[str]) -> int:
        """The hub's ack: durable on the device before returning. Returns how many changed state.

        Only a recorded ack takes results out of the window: if the store fails (StoreError, re-raised) they stay
        in flight, time out and are re-sent; the hub acks them again."""
        ids = list(result_ids)
        changed = self.store.mark_acked(ids)
        for rid in ids:
            self._in_flight.pop(rid, None)
        self._hub_answered()
        return changed

    def rejected(self, refusals: Iterable[Refusal]) -> int:
        """The hub's nack: park these results (durable before returning) and re-send from the oldest result
        still to deliver. Returns how many were newly parked."""
        items = list(refusals)
        parked = self.store.mark_rejected((r.result_id, r.reason, r.detail) for r in items)
        self._hub_answered()
        if parked or any(r.result_id in self._in_flight for r in items):
            self.rewind("the hub rejected a result for good")
        return parked

    def timed_out(self) -> bool:
        if not self._in_flight:
            return False
        oldest = next(iter(self._in_flight.values()))
        return self._clock() - oldest.sent_at >= self.current_timeout_s

    def back_off(self) -> None:
        """The oldest in-flight result timed out: rewind, shrink the window to one probe, double the wait."""
        waited = self.current_timeout_s
        self._backoff = min(self._backoff + 1, 30)
        log.warning(
            "uplink: no ack from the hub for %.1fs; probing with the oldest un-acknowledged result only, next wait for an ack %.1fs",
            waited,
            self.current_timeout_s,
        )
        self.rewind("ack timeout")

    def _hub_answered(self) -> None:
        if self._backoff:
            log.info("uplink: the hub answers again; back to the full window (%d) and ack timeout %.1fs", self.window, self.ack_timeout_s)
            self._backoff = 0

    def rewind(self, reason: str) -> None:
        """Forget the window: the next call re-sends from the oldest result not yet acknowledged."""
        if self._in_flight:
            log.info("uplink: re-sending from the oldest un-acknowledged result (%s; %d were in flight)", reason, len(self._in_flight))
        self._in_flight.clear()
        self._cursor = 0
        self._last_sent_id = None
