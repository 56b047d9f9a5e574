"""``python -m hub serve``: receive results, status and heartbeats from devices, store, acknowledge.

* A persistent MQTT session (fixed client id, clean_session=False): while the hub is down the broker
  queues results for it.
* Manual PUBACK (paho ``manual_ack``): a message is acknowledged to the broker only after it has been
  stored (or rejected), so a hub crash between receive and commit makes the broker deliver it again.
* paho's network thread only queues messages; this module's loop validates, stores a batch in one
  transaction, then publishes the device acks and the PUBACKs.
* A result is stored only after the device's previous un-acknowledged result (``prev_result_id``) is
  stored: results reach the database in the device's ``seq`` order. One that arrives early is dropped
  un-acked ("deferred"); the device re-sends it in order after its ack timeout.
* Anything that breaks the contract is counted in the ``rejections`` table with its reason, logged,
  and PUBACKed (so the broker does not send it again) — never stored, never fatal.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import paho.mqtt.client as mqtt

from device.contract import (
    DEVICE_SUBSCRIPTIONS,
    MAX_ACK_IDS,
    QOS,
    AckMessage,
    ContractError,
    ResultMessage,
    Topic,
    decode_heartbeat,
    decode_result,
    decode_status,
    encode_ack,
    parse_topic,
    topic,
)
from device.mqtt import BrokerAddress, new_client
from device.results import utc_now_iso
from hub.config import HubConfig
from hub.store import HubStore, HubStoreError

log = logging.getLogger(__name__)

STATS_EVERY_S = 60.0
PRUNE_EVERY_S = 3600.0


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int


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
        client = new_client(cfg, cfg.client_id, clean_session=False, manual_ack=True, who="hub")
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
        client.subscribe([(sub, QOS[sub.rsplit("/", 1)[1]]) for sub in DEVICE_SUBSCRIPTIONS])

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if not self._stop.is_set():
            log.warning("hub: disconnected from the broker (%s); reconnecting", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._queue.put(Incoming(message.topic, bytes(message.payload), message.mid, message.qos))

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
        """Validate, store, ack. Public for tests: works without a broker connection."""
        now = utc_now_iso()
        candidates: list[ResultMessage] = []
        for item in batch:
            self.counters["received"] += 1
            try:
                where = parse_topic(item.topic)
                if where.kind == "result":
                    candidates.append(decode_result(item.topic, item.payload))
                elif where.kind == "status":
                    if item.payload:  # an empty retained message clears the status: nothing to record
                        self.store.record_status(decode_status(item.topic, item.payload), now)
                elif where.kind == "heartbeat":
                    self.store.record_heartbeat(decode_heartbeat(item.topic, item.payload), now)
                else:
                    raise ContractError("bad_topic", f"the hub does not accept {where.kind} messages")
            except ContractError as exc:
                self._reject(item, exc)
        accepted, acks = self._in_order(candidates)
        if accepted:
            stored = self.store.add_results(accepted, now)
            self.counters["stored"] += sum(stored)
            self.counters["duplicates"] += len(stored) - sum(stored)
        for (site, device_id), ids in acks.items():
            for start in range(0, len(ids), MAX_ACK_IDS):
                payload = encode_ack(AckMessage(result_ids=tuple(ids[start:start + MAX_ACK_IDS]), at=now))
                self._client.publish(topic(site, device_id, "ack"), payload, qos=QOS["ack"], retain=False)
        for item in batch:
            if item.qos > 0:
                self._client.ack(item.mid, item.qos)

    def _in_order(self, candidates: list[ResultMessage]) -> tuple[list[ResultMessage], dict[tuple[str, str], list[str]]]:
        """Which results to store now (their predecessor is stored), and which ids to ack per device."""
        known = self.store.stored_ids(
            [m.result_id for m in candidates] + [m.prev_result_id for m in candidates if m.prev_result_id]
        )
        accepted: list[ResultMessage] = []
        acks: dict[tuple[str, str], list[str]] = defaultdict(list)
        for m in candidates:
            if m.result_id in known:
                self.counters["duplicates"] += 1
            elif m.prev_result_id is None or m.prev_result_id in known:
                accepted.append(m)
                known.add(m.result_id)
            else:
                self.counters["deferred"] += 1
                log.debug("hub: %s/%s seq %d arrived before its predecessor; not stored yet",
                          m.site, m.device_id, m.seq)
                continue
            acks[(m.site, m.device_id)].append(m.result_id)
        return accepted, acks

    def _reject(self, item: Incoming, exc: ContractError) -> None:
        self.counters["rejected"] += 1
        self.counters[f"rejected.{exc.reason}"] += 1
        where = _topic_or_none(item.topic)
        log.warning("hub: rejected a message on %r (%d bytes): %s", item.topic[:200], len(item.payload), exc)
        self.store.record_rejection(exc.reason, exc.detail, item.topic,
                                    where.site if where else None, where.device_id if where else None)

    def _log_stats(self) -> None:
        if self.counters:
            log.info("hub: %s", ", ".join(f"{k}={v}" for k, v in sorted(self.counters.items())))

    def _prune(self) -> None:
        cutoff = datetime.now(timezone.utc) - timedelta(days=self.config.ingest.heartbeat_keep_days)
        try:
            self.store.prune_heartbeats(cutoff.isoformat(timespec="milliseconds").replace("+00:00", "Z"))
        except HubStoreError as exc:
            log.error("hub: %s", exc)


def _topic_or_none(text: str) -> Topic | None:
    try:
        return parse_topic(text)
    except ContractError:
        return None
