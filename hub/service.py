"""``python -m hub serve``: receive results, status and heartbeats from devices, store, acknowledge.

* A persistent MQTT session (fixed client id, clean_session=False): while the hub is down the broker
  queues results for it.
* Manual PUBACK (paho ``manual_ack``): a message is acknowledged to the broker only after it has been
  stored (or rejected), so a hub crash between receive and commit makes the broker deliver it again.
* paho's network thread only queues messages; this module's loop validates, stores a batch in one
  transaction, then publishes the device acks and the PUBACKs.
* A result is stored only after the device's previous un-acknowledged result (``prev_result_id``) is
  stored: results reach the database in the device's ``seq`` order. One that arrives early ("deferred") is
  parked, un-acked, in the database's ``waiting_results`` (a reorder buffer all hubs on the database share) and
  stored, then acked, by whichever hub stores its predecessor (counted ``stored_after_waiting``). With two hubs in a
  shared group the broker alternates a device's messages between them, so most results arrive at the hub that does
  not hold their predecessor: dropping them made the device wait an ack timeout for almost every result. A result
  whose predecessor never comes is re-sent by the device after its ack timeout, as before.
* Anything that breaks the contract is counted in the ``rejections`` table with its reason, logged,
  and PUBACKed (so the broker does not send it again) — never stored, never fatal.
* Every message ends with exactly one :class:`Outcome`, counted: stored, recorded (status/heartbeat),
  duplicates (same result again: acked again), deferred, rejected (with a reason) or cleared (an empty
  retained status). The database's errors are handled per message: one whose data the database refuses
  (``UnstorableError``) is rejected as ``unstorable`` and the rest of its batch is stored; only an outage
  (``HubStoreError``) makes the batch wait and retry.
* A result_id already stored with different content (``CONTENT_FIELDS``) is rejected as
  ``duplicate_conflict``, not acked; the first stored content stays. A re-send that differs only in
  transport fields (``historical``, ``prev_result_id``, the thumbnail left out) is a duplicate.
* No log line and no rejection detail carries a patient reference (details name fields, not values).
* A rejected result whose ``result_id`` can be read is also answered with a **nack** on the sending
  device's ack topic (reason and detail): the device parks it and delivers the results after it, instead
  of re-sending it forever while its successors wait (deferred) behind it.
* A **correction** (a result voided or moved, device/link/corrections.py) is stored idempotently, one per
  transaction, after the batch's results: a redelivery is a duplicate (acked again), another content under its
  correction_id a ``duplicate_conflict``; one whose predecessor (``prev_correction_id``) is not stored yet is
  deferred like a result. One for a result the hub does not have (``unknown_result``), of another device's result
  (``not_own_result``), of a voided result (``already_voided``) or whose ``from`` is not where the result is at the
  hub (``inconsistent``) is rejected for good and answered in the ``correction_ack``'s ``rejected`` list: the device
  sends a correction only after the hub acked its result, so none of these can be cured by waiting.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

import paho.mqtt.client as mqtt

from device.clock import to_iso, utc_now_iso
from device.link.contract import (
    CONTENT_FIELDS,
    CORRECTION_CONTENT_FIELDS,
    DEVICE_SUBSCRIPTIONS,
    MAX_ACK_IDS,
    MAX_NACK_DETAIL,
    MAX_NACK_RESULTS,
    QOS,
    AckMessage,
    ContractError,
    CorrectionAckMessage,
    CorrectionMessage,
    CorrectionRefusal,
    NackMessage,
    Refusal,
    ResultMessage,
    Topic,
    correction_id_of,
    decode_correction,
    decode_heartbeat,
    decode_result,
    decode_status,
    encode_ack,
    encode_correction_ack,
    encode_nack,
    parse,
    parse_topic,
    result_id_of,
    topic,
)
from device.link.mqtt import BrokerAddress, client_id_for, new_client
from hub.config import HubConfig
from hub.store import Added, HubStore, HubStoreError, UnstorableError

log = logging.getLogger(__name__)

STATS_EVERY_S = 60.0
PRUNE_EVERY_S = 3600.0
WAITING_ROUNDS = 3  # reorder-buffer passes per batch (another hub may store more while one pass runs)
WAITING_KEEP_S = 86400.0  # a result waiting this long is forgotten (its device re-sent it long since)


def subscriptions(shared_group: str | None) -> list[tuple[str, int]]:
    """The device topics with their QoS; with a shared group, as ``$share/<group>/...`` so that of several hubs
    exactly one receives each message (MQTT 5 shared subscriptions; Mosquitto serves them to 3.1.1 clients too)."""
    prefix = f"$share/{shared_group}/" if shared_group else ""
    return [(prefix + sub, QOS[sub.rsplit("/", 1)[1]]) for sub in DEVICE_SUBSCRIPTIONS]


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int


class Outcome(Enum):
    """How one received message ended; each is a counter (``received`` = the sum of all of them)."""

    STORED = "stored"  # a new result, committed, acked
    RECORDED = "recorded"  # a status or heartbeat, committed
    DUPLICATE = "duplicates"  # a result already stored with the same content: acked again
    DEFERRED = "deferred"  # its predecessor is not stored yet: dropped un-acked, the device re-sends it
    REJECTED = "rejected"  # broke the contract, conflicts with a stored result, or refused by the database
    CLEARED = "cleared"  # an empty retained status (clears the broker's copy): nothing to record


OUTCOMES = tuple(o.value for o in Outcome)


class Decision(Enum):
    """What to do with a decoded result, before the database is written."""

    STORE = "store"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    DEFERRED = "deferred"


@dataclass
class Ledger:
    """One batch's bookkeeping; merged into the service's counters only once the batch is done."""

    tally: Counter[str] = field(default_factory=Counter)
    acks: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    nacks: dict[tuple[str, str], list[Refusal]] = field(default_factory=lambda: defaultdict(list))
    correction_acks: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    correction_nacks: dict[tuple[str, str], list[CorrectionRefusal]] = field(default_factory=lambda: defaultdict(list))


@dataclass(frozen=True)
class Planned:
    item: Incoming
    message: ResultMessage
    decision: Decision
    differs: tuple[str, ...] = ()  # for CONFLICT: the content fields that differ from the stored result


class HubService:
    def __init__(self, config: HubConfig, store: HubStore, broker: str | None = None) -> None:
        self.config = config
        self.store = store
        address = BrokerAddress.parse(broker or config.mqtt.broker)
        self.host, self.port = address.host, address.port
        self.counters: Counter[str] = Counter()
        self._queue: queue.Queue[Incoming] = queue.Queue()
        self._stop = threading.Event()
        self._client = self._make_client()

    # --- MQTT --------------------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        cfg = self.config.mqtt
        # Persistent session: the broker queues results while the hub is down. Manual acks: a message
        # is acknowledged to the broker only after its database commit.
        # In a shared group a clean session: a dead hub's session must not keep taking its share of messages (the
        # devices re-send what no hub acked); alone, a persistent one, so the broker queues while the hub restarts.
        client = new_client(
            cfg, client_id_for(cfg, "sonopi-hub", who="hub [mqtt]"), clean_session=cfg.shared_group is not None, manual_ack=True, who="hub"
        )
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        return client

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("hub: broker refused the connection (%s)", reason_code)
            return
        log.info("hub: connected to %s:%d (session present: %s)", self.host, self.port, flags.session_present)
        client.subscribe(subscriptions(self.config.mqtt.shared_group))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if not self._stop.is_set():
            log.warning("hub: disconnected from the broker (%s); reconnecting", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            name = message.topic
        except UnicodeDecodeError:  # the broker should not pass one on; parse_topic then rejects it
            name = repr(bytes(message._topic))[:300]
        self._queue.put(Incoming(name, bytes(message.payload), message.mid, message.qos))

    # --- lifecycle ---------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def serve(self) -> int:
        log.info("hub: storing into %s (%s), broker %s:%d", self.store.target, self.store.backend, self.host, self.port)
        self._client.connect_async(self.host, self.port, keepalive=self.config.mqtt.keepalive_s)
        self._client.loop_start()
        next_stats = time.monotonic() + STATS_EVERY_S
        next_prune = time.monotonic()
        try:
            while not self._stop.is_set():
                batch = self._drain(timeout_s=0.2)
                if batch:
                    self._process_until_stored(batch)
                now = time.monotonic()
                if now >= next_stats:
                    self._log_stats()
                    next_stats = now + STATS_EVERY_S
                if now >= next_prune:
                    self._prune()
                    next_prune = now + PRUNE_EVERY_S
        finally:
            self._client.disconnect()
            self._client.loop_stop()
            self._log_stats()
        return 0

    def _drain(self, timeout_s: float) -> list[Incoming]:
        try:
            first = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return []
        batch = [first]
        while len(batch) < self.config.ingest.max_batch:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _process_until_stored(self, batch: list[Incoming]) -> None:
        delay = 0.5
        while True:
            try:
                self.process(batch)
                return
            except HubStoreError as exc:
                # Nothing was acknowledged: retry the same batch (database restarting, disk full...).
                log.error("hub: %s; retrying in %.1fs", exc, delay)
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, 30.0)

    # --- processing --------------------------------------------------------------------------------

    def process(self, batch: list[Incoming]) -> None:
        """Validate, store, ack (and nack). Public for tests: works without a broker connection.

        Raises HubStoreError only when the database is away (the batch is then retried as a whole, and
        nothing of it has been acknowledged); every other problem ends one message, not the batch."""
        now = utc_now_iso()
        ledger = Ledger()
        candidates: list[tuple[Incoming, ResultMessage]] = []
        corrections: list[tuple[Incoming, CorrectionMessage]] = []
        for item in batch:
            ledger.tally["received"] += 1
            outcome = self._accept(item, now, candidates, ledger, corrections)
            if outcome is not None:
                ledger.tally[outcome.value] += 1
        self._store_results(candidates, now, ledger)
        for item, correction in corrections:  # after the results: a correction may follow its result in one batch
            outcome = self._store_correction(item, correction, now, ledger)
            ledger.tally[outcome.value] += 1
            ledger.tally[f"corrections.{outcome.value}"] += 1
        self._publish_acks(ledger, now)
        for item in batch:
            if item.qos > 0:
                self._client.ack(item.mid, item.qos)
        self.counters.update(ledger.tally)

    def _accept(
        self,
        item: Incoming,
        now: str,
        candidates: list[tuple[Incoming, ResultMessage]],
        ledger: Ledger,
        corrections: list[tuple[Incoming, CorrectionMessage]] | None = None,
    ) -> Outcome | None:
        """Decode one message; a status or heartbeat is recorded now, a result joins ``candidates`` and a correction
        ``corrections`` (None)."""
        where: Topic | None = None
        try:
            where = parse_topic(item.topic)
            if where.kind == "result":
                candidates.append((item, decode_result(item.topic, item.payload)))
                return None
            if where.kind == "correction" and corrections is not None:
                corrections.append((item, decode_correction(item.topic, item.payload)))
                return None
            if where.kind == "status":
                if not item.payload:  # an empty retained message clears the status: nothing to record
                    return Outcome.CLEARED
                self.store.record_status(decode_status(item.topic, item.payload), now)
                return Outcome.RECORDED
            if where.kind == "heartbeat":
                self.store.record_heartbeat(decode_heartbeat(item.topic, item.payload), now)
                return Outcome.RECORDED
            raise ContractError("bad_topic", f"the hub does not accept {where.kind} messages")
        except ContractError as exc:
            return self._reject(item, exc.reason, exc.detail, ledger, _nackable_id(where, item))
        except UnstorableError as exc:
            return self._reject(item, "unstorable", str(exc), ledger)
        except HubStoreError:
            raise  # the database is away: the whole batch waits
        except Exception as exc:  # last resort: a bug in validation must not become a poison
            # message that stops the hub on every start; the message is rejected and the bug logged.
            log.error("hub: internal error while validating a message on %r: %s (rejected; please report)", item.topic[:200], type(exc).__name__)
            log.debug("hub: internal error", exc_info=True)
            return self._reject(item, "internal_error", f"{type(exc).__name__} while validating", ledger, _nackable_id(where, item))

    def _store_results(self, candidates: list[tuple[Incoming, ResultMessage]], now: str, ledger: Ledger) -> None:
        """Store what may be stored now (in one transaction unless the database refuses one); the ids to
        ack and nack go into ``ledger``."""
        plan = self._in_order(candidates)
        to_store = [p.message for p in plan if p.decision is Decision.STORE]
        added = {a.result_id: a for a in self.store.add_results_each(to_store, now)} if to_store else {}
        early = [(p.item.topic, p.item.payload, p.message) for p in plan if p.decision is Decision.DEFERRED]
        if early:  # durable in the shared reorder buffer before their PUBACK
            self._note_buffer_full(self.store.park_waiting(early, now, per_device=self.config.ingest.max_waiting_per_device), ledger)
        for p in plan:
            outcome = self._settle(p, added, ledger)
            ledger.tally[outcome.value] += 1
            if outcome in (Outcome.STORED, Outcome.DUPLICATE):
                ledger.acks[(p.message.site, p.message.device_id)].append(p.message.result_id)
        if candidates:
            self._store_waiting({(m.site, m.device_id) for _, m in candidates}, now, ledger)

    def _note_buffer_full(self, refused: list[ResultMessage], ledger: Ledger) -> None:
        """Results not parked because their device has ``[ingest] max_waiting_per_device`` waiting already: deferred
        as before the buffer existed (PUBACKed, not acked; the device still holds them and re-sends them after its
        ack timeout), counted ``deferred.buffer_full`` and logged once per device and batch (docs/hub.md)."""
        by_device: Counter[tuple[str, str]] = Counter((m.site, m.device_id) for m in refused)
        for (site, device_id), count in sorted(by_device.items()):
            log.warning(
                "hub: %s/%s has %d results waiting for a predecessor (the cap); %d more not parked: deferred, the device re-sends them",
                site,
                device_id,
                self.config.ingest.max_waiting_per_device,
                count,
            )
        ledger.tally["deferred.buffer_full"] += len(refused)

    def _store_waiting(self, devices: set[tuple[str, str]], now: str, ledger: Ledger) -> None:
        """Store the waiting results (``waiting_results``, any hub's) whose predecessor is stored now, in seq order,
        and ack them. Run after every batch's commits, by every hub: when one hub parks a result while another stores
        its predecessor, whichever of the two commits second sees the other's commit, so no result is left waiting
        (READ COMMITTED). Both may store the same result: the second insert is a no-op (``result_id`` unique).
        Only the ids are read until a result can be stored; its payload is then parsed, not validated again (the
        hub that parked it validated it): the schema check is most of a result's cost at the hub."""
        for _ in range(WAITING_ROUNDS):
            rows = self.store.waiting(devices)
            if not rows:
                return
            known = self.store.stored_ids([w.result_id for w in rows] + [w.prev_result_id for w in rows])
            ready: list[str] = []
            done: list[str] = []  # stored already (a re-send, or another hub): only dropped from the buffer
            for w in rows:  # per device in seq order, so a chain of waiting results is stored in one pass
                if w.result_id in known:
                    done.append(w.result_id)
                elif w.prev_result_id in known:
                    ready.append(w.result_id)
                    known.add(w.result_id)
            messages = self._waiting_messages(ready)
            added = self.store.add_results_each(messages, now) if messages else []
            for m, a in zip(messages, added):
                self._settle_waiting(m, a, ledger)
            if done or ready:
                self.store.drop_waiting(done + ready)
            if not ready:
                return

    def _waiting_messages(self, result_ids: list[str]) -> list[ResultMessage]:
        payloads = self.store.waiting_payloads(result_ids)
        messages: list[ResultMessage] = []
        for result_id in result_ids:
            if result_id not in payloads:  # another hub stored and dropped it meanwhile
                continue
            try:
                messages.append(ResultMessage.from_payload(parse("result", payloads[result_id][1])))
            except (ContractError, KeyError, TypeError, ValueError) as exc:  # it parsed when it was parked
                log.error("hub: waiting result %s cannot be read back (%s); dropped, its device re-sends it", result_id, type(exc).__name__)
        return messages

    def _settle_waiting(self, m: ResultMessage, added: Added, ledger: Ledger) -> None:
        """A waiting result left the buffer: stored (or stored meanwhile by another hub) and acked; one the database
        refuses is only dropped (its device's re-send is then rejected and nacked)."""
        if added.error is not None:
            log.warning("hub: %s/%s seq %d: waiting result %s dropped: the database refused it", m.site, m.device_id, m.seq, m.result_id)
            return
        if added.stored:
            ledger.tally["stored_after_waiting"] += 1
        ledger.acks[(m.site, m.device_id)].append(m.result_id)

    def _settle(self, p: Planned, added: dict[str, Added], ledger: Ledger) -> Outcome:
        m = p.message
        if p.decision is Decision.DEFERRED:
            log.debug("hub: %s/%s seq %d arrived before its predecessor; not stored yet", m.site, m.device_id, m.seq)
            return Outcome.DEFERRED
        if p.decision is Decision.CONFLICT:
            detail = f"result {m.result_id} (seq {m.seq}) is already stored with a different {', '.join(p.differs)}"
            return self._reject(p.item, "duplicate_conflict", detail, ledger, m.result_id)
        result = added.get(m.result_id)  # STORE: its own insert; DUPLICATE: an earlier copy in this batch, if any
        if result is not None and result.error is not None:  # a copy shares the first copy's fate
            return self._reject(p.item, "unstorable", _redact(result.error, m), ledger, m.result_id)
        if p.decision is Decision.STORE and result is not None and result.stored:
            return Outcome.STORED
        return Outcome.DUPLICATE  # stored before, a copy in this batch, or stored meanwhile by another hub

    def _in_order(self, candidates: list[tuple[Incoming, ResultMessage]]) -> list[Planned]:
        """Each result's fate: stored now (its predecessor is stored), duplicate, conflict, or deferred."""
        messages = [m for _, m in candidates]
        known = self.store.stored_ids([m.result_id for m in messages] + [m.prev_result_id for m in messages if m.prev_result_id])
        stored = self.store.results_by_id([m.result_id for m in messages if m.result_id in known])
        first: dict[str, Any] = dict(stored)  # the content each result_id has (stored, or earlier in this batch)
        plan: list[Planned] = []
        for item, m in candidates:
            original = first.get(m.result_id)
            if original is not None:
                differs = differing_fields(original, m)
                plan.append(Planned(item, m, Decision.CONFLICT if differs else Decision.DUPLICATE, differs))
            elif m.prev_result_id is None or m.prev_result_id in known:
                plan.append(Planned(item, m, Decision.STORE))
                known.add(m.result_id)
                first[m.result_id] = m
            else:
                plan.append(Planned(item, m, Decision.DEFERRED))
        return plan

    def _store_correction(self, item: Incoming, m: CorrectionMessage, now: str, ledger: Ledger) -> Outcome:
        """Store one correction if it may be stored now (see the module docstring); acks and nacks go into ``ledger``."""
        device = (m.site, m.device_id)
        known = self.store.corrections_by_id([m.correction_id] + ([m.prev_correction_id] if m.prev_correction_id else []))
        original = known.get(m.correction_id)
        if original is not None:
            differs = correction_differs(original.correction, m)
            if differs:
                return self._reject(
                    item,
                    "duplicate_conflict",
                    f"correction {m.correction_id} (seq {m.seq}) is already stored with a different {', '.join(differs)}",
                    ledger,
                    m.correction_id,
                )
            ledger.correction_acks[device].append(m.correction_id)
            return Outcome.DUPLICATE
        result = self.store.result(m.result_id)
        refusal = _correction_refusal(m, result)
        if refusal is not None:
            return self._reject(item, refusal[0], refusal[1], ledger, m.correction_id)
        if m.prev_correction_id is not None and m.prev_correction_id not in known:
            log.debug("hub: %s/%s correction seq %d arrived before its predecessor; not stored yet", m.site, m.device_id, m.seq)
            return Outcome.DEFERRED
        assert result is not None
        placement = self.store.placements([result])[result.result_id]
        if placement.voided:
            return self._reject(item, "already_voided", f"result {m.result_id} is already voided at the hub", ledger, m.correction_id)
        if placement.place != m.origin:
            return self._reject(
                item, "inconsistent", f"correction {m.correction_id} from: not where result {m.result_id} is at the hub", ledger, m.correction_id
            )
        try:
            stored = self.store.add_correction(m, now)
        except UnstorableError as exc:
            return self._reject(item, "unstorable", _redact_place(str(exc), m), ledger, m.correction_id)
        ledger.correction_acks[device].append(m.correction_id)
        return Outcome.STORED if stored else Outcome.DUPLICATE  # not stored: another hub stored it meanwhile

    def _publish_acks(self, ledger: Ledger, now: str) -> None:
        """Acks for what is stored, then nacks for results rejected for good, to each device's ack topic."""
        messages: list[tuple[tuple[str, str], AckMessage | NackMessage]] = []
        for device, ids in ledger.acks.items():
            messages += [(device, AckMessage(tuple(ids[i : i + MAX_ACK_IDS]), now)) for i in range(0, len(ids), MAX_ACK_IDS)]
        for device, refusals in ledger.nacks.items():
            messages += [(device, NackMessage(tuple(refusals[i : i + MAX_NACK_RESULTS]), now)) for i in range(0, len(refusals), MAX_NACK_RESULTS)]
        answered: list[tuple[tuple[str, str], AckMessage | NackMessage | CorrectionAckMessage]] = [
            (device, answer)
            for device in dict.fromkeys([*ledger.correction_acks, *ledger.correction_nacks])
            for answer in _correction_answers(ledger.correction_acks.get(device, []), ledger.correction_nacks.get(device, []), now)
        ]
        for (site, device_id), message in [*messages, *answered]:
            try:
                if isinstance(message, CorrectionAckMessage):
                    payload = encode_correction_ack(message)
                else:
                    payload = encode_ack(message) if isinstance(message, AckMessage) else encode_nack(message)
            except ContractError as exc:  # cannot happen for ids the result schema accepted; never fatal
                log.error("hub: cannot encode an ack for %s/%s (%s)", site, device_id, exc)
                continue
            self._client.publish(topic(site, device_id, "ack"), payload, qos=QOS["ack"], retain=False)

    def _reject(self, item: Incoming, reason: str, detail: str, ledger: Ledger, result_id: str | None = None) -> Outcome:
        """Count, log and record a rejection; a result with a readable result_id is also nacked to the
        device that sent it (the topic's device), which parks it instead of re-sending it forever."""
        ledger.tally[f"rejected.{reason}"] += 1
        where = _topic_or_none(item.topic)
        log.warning("hub: rejected a message on %r (%d bytes): %s: %s", item.topic[:200], len(item.payload), reason, detail)
        try:
            self.store.record_rejection(reason, detail, item.topic, where.site if where else None, where.device_id if where else None)
        except UnstorableError as exc:  # never expected (details are escaped); counted in the log line anyway
            log.error("hub: could not record the rejection (%s)", exc)
        if where is not None and where.kind == "result" and result_id is not None:
            ledger.nacks[(where.site, where.device_id)].append(Refusal(result_id, reason, _one_line(detail)[:MAX_NACK_DETAIL]))
        if where is not None and where.kind == "correction" and result_id is not None:  # result_id: the correction's id
            ledger.correction_nacks[(where.site, where.device_id)].append(CorrectionRefusal(result_id, reason, _one_line(detail)[:MAX_NACK_DETAIL]))
        return Outcome.REJECTED

    def _log_stats(self) -> None:
        if self.counters:
            log.info("hub: counters %s", json.dumps(dict(sorted(self.counters.items()))))

    def _prune(self) -> None:
        cutoff = datetime.now(UTC) - timedelta(days=self.config.ingest.heartbeat_keep_days)
        try:
            self.store.prune_heartbeats(to_iso(cutoff))
            stale = datetime.now(UTC) - timedelta(seconds=WAITING_KEEP_S)
            self.store.prune_waiting(to_iso(stale))
        except HubStoreError as exc:
            log.error("hub: %s", exc)


def _nackable_id(where: Topic | None, item: Incoming) -> str | None:
    """The id to nack a rejected message with: read (a second parse) only from a result or correction topic,
    the kinds :meth:`HubService._reject` answers."""
    if where is not None and where.kind == "correction":
        return correction_id_of(item.payload)
    return result_id_of(item.payload) if where is not None and where.kind == "result" else None


def _correction_answers(acked: list[str], refused: list[CorrectionRefusal], now: str) -> list[CorrectionAckMessage]:
    """One device's correction acks and refusals, as few correction_ack messages as their limits allow."""
    answers = []
    while acked or refused:
        answers.append(CorrectionAckMessage(tuple(acked[:MAX_ACK_IDS]), tuple(refused[:MAX_NACK_RESULTS]), now))
        acked, refused = acked[MAX_ACK_IDS:], refused[MAX_NACK_RESULTS:]
    return answers


def correction_differs(original: Any, message: CorrectionMessage) -> tuple[str, ...]:
    """The content fields in which ``message`` differs from the correction already stored under its id."""
    names = {"origin": "from", "target": "to"}
    return tuple(names.get(f, f) for f in CORRECTION_CONTENT_FIELDS if getattr(original, f) != getattr(message, f))


def _correction_refusal(m: CorrectionMessage, result: Any) -> tuple[str, str] | None:
    """Why a correction can never be stored here (reason, detail), or None."""
    if result is None:
        return "unknown_result", f"correction {m.correction_id}: the hub has no result {m.result_id}"
    if (result.site, result.device_id) != (m.site, m.device_id):
        return "not_own_result", f"correction {m.correction_id}: result {m.result_id} was sent by another device"
    return None


def _redact_place(text: str, m: CorrectionMessage) -> str:
    """``text`` without the correction's patient references, exam ids or note (a database error may quote a value)."""
    for place in (m.origin, m.target or m.origin):
        for value, name in ((place.patient_ref, "<patient_ref>"), (place.exam_id, "<exam_id>")):
            if value:
                text = text.replace(value, name)
    return text.replace(m.note, "<note>") if m.note else text


def differing_fields(original: Any, message: ResultMessage) -> tuple[str, ...]:
    """The content fields in which ``message`` differs from the result already stored (or seen) under its id.
    A thumbnail counts only when both have one (a device may be configured to leave it out)."""
    differs = tuple(name for name in CONTENT_FIELDS if getattr(original, name) != getattr(message, name))
    if original.thumbnail is not None and message.thumbnail is not None and original.thumbnail != message.thumbnail:
        differs += ("thumbnail",)
    return differs


def _redact(text: str, message: ResultMessage) -> str:
    """``text`` without the message's patient reference or exam id (a database error may quote a value)."""
    for value, name in ((message.patient_ref, "<patient_ref>"), (message.exam_id, "<exam_id>")):
        if value:
            text = text.replace(value, name)
    return text


def _one_line(text: str) -> str:
    """``text`` with control characters as spaces (a database error can span lines; a nack may not)."""
    return "".join(c if c.isprintable() else " " for c in text)


def _topic_or_none(text: str) -> Topic | None:
    try:
        return parse_topic(text)
    except ContractError:
        return None
