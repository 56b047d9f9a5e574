"""The corrections' outbox: the results' rules (:class:`~device.link.uplink.outbox.Outbox`), for corrections.

Same window, ack timeout, go-back-N, back-off and parking on a rejection, over the store's ``corrections`` table
(device/link/corrections.py), with one rule more: a correction is sent only once the hub has acknowledged the result it
corrects (``ResultStore.pending_corrections``), so the hub always has the result first. Each message names the
previous correction still awaiting an ack (``prev_correction_id``): the hub stores a correction only once that one
is stored, so the corrections of one result reach it in the order they were made.

Because a correction may wait for its result while a later one (of another, acknowledged result) goes out, the
window is refilled from every pending correction not in flight, not from a cursor.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from device.link.contract import ContractError, CorrectionMessage, CorrectionRefusal, encode_correction
from device.link.uplink.outbox import InFlight, Outbox

log = logging.getLogger(__name__)


class CorrectionOutbox(Outbox):
    def next_messages(self, *, historical_before: str) -> list[tuple[CorrectionMessage, bytes]]:  # type: ignore[override]  # the results' rules for another message type: Outbox is not generic over it
        """Up to the free window of corrections to publish now, oldest first, with their encoded payloads."""
        slots = self.free_slots()
        if slots == 0:
            return []
        out: list[tuple[CorrectionMessage, bytes]] = []
        skip = set(self._in_flight) | self.unsendable
        for correction in self.store.pending_corrections(limit=slots + len(skip)):
            if correction.correction_id in skip:
                continue
            if len(out) == slots:
                break
            prev = self._last_sent_id if self._last_sent_id in self._in_flight else None
            try:
                message = CorrectionMessage.from_correction(correction, prev_correction_id=prev)
                payload = encode_correction(message)
            except (ContractError, ValueError) as exc:
                self.unsendable.add(correction.correction_id)
                log.error(
                    "uplink: correction %s (of result %s) breaks the contract and is not sent: %s",
                    correction.correction_id,
                    correction.result_id,
                    exc,
                )
                continue
            self._in_flight[correction.correction_id] = InFlight(seq=message.seq, sent_at=self._clock())
            self._last_sent_id = correction.correction_id
            out.append((message, payload))
        return out

    def sent(self, correction_ids: Iterable[str]) -> None:
        ids = list(correction_ids)
        if ids:
            self.store.mark_corrections_sent(ids)

    def acked(self, correction_ids: Iterable[str]) -> int:
        """The hub stored these (durable on the device before returning; a StoreError leaves them in flight)."""
        ids = list(correction_ids)
        changed = self.store.mark_corrections_acked(ids) if ids else 0
        for cid in ids:
            self._in_flight.pop(cid, None)
        self._hub_answered()
        return changed

    def rejected(self, refusals: Iterable[CorrectionRefusal]) -> int:  # type: ignore[override]  # the results' rules for another message type: Outbox is not generic over it
        """The hub rejected these for good: parked (``device history`` shows ``rejected: <reason>``); the corrections
        sent after them go out again with a chain that leaves them out."""
        items = list(refusals)
        if not items:
            return 0
        parked = self.store.mark_corrections_rejected((r.correction_id, r.reason, r.detail) for r in items)
        self._hub_answered()
        if parked or any(r.correction_id in self._in_flight for r in items):
            self.rewind("the hub rejected a correction for good")
        return parked
