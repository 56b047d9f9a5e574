"""The uplink process: ``python -m device uplink`` -> :func:`run`.

One thread drives everything (paho's ``loop()``, the outbox, heartbeats), so no state is shared
between threads. One paho client per connection attempt: nothing from a dead session (paho's in-memory
queue) survives; the SQLite outbox is the only queue. A connection goes::

    connect (TLS, credentials, Last Will "offline" retained)
      -> CONNACK: subscribe to our ack topic, publish birth "online" (retained)
      -> SUBACK: send results from the outbox (window, seq order), heartbeats
      -> acks from the hub: mark acked in the store
      -> corrections (a result voided or moved), once the hub acked their result: their own outbox, same rules
    lost: wait a jittered, doubling delay, start over (re-sending everything not yet acked)
    SIGTERM/SIGINT: publish "stopped" (retained), disconnect, exit 0
"""

from __future__ import annotations

import logging
import signal
import ssl
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt

from device import __version__, watchdog
from device.clock import utc_now_iso
from device.config import DeviceConfig
from device.errors import ConfigError, SonopiError, StoreError
from device.link.contract import (
    QOS,
    ContractError,
    CorrectionAckMessage,
    DeviceStatus,
    NackMessage,
    StatusMessage,
    decode_ack_topic,
    encode_heartbeat,
    encode_status,
    topic,
)
from device.link.mqtt import BrokerAddress, client_id_for
from device.link.uplink.correction_outbox import CorrectionOutbox
from device.link.uplink.heartbeat import build_heartbeat
from device.link.uplink.mqtt_client import Backoff, make_client
from device.link.uplink.outbox import Outbox
from device.link.uplink.state import Connection, write_state
from device.model.bundle import load_bundle
from device.store import ResultStore

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 15.0
STOP_FLUSH_S = 3.0


def run(config: DeviceConfig, broker: str | None) -> int:
    """Run the uplink until SIGTERM/SIGINT. Exit codes: 0 stopped cleanly, 2 configuration, 1 store."""
    if not config.uplink.enabled:
        log.warning("uplink is disabled in the configuration ([uplink] enabled = false); nothing to do")
        return 0
    try:
        service = UplinkService(config, broker)
    except ConfigError as exc:
        log.error("uplink: %s", exc)
        return 2
    except StoreError as exc:
        log.error("uplink: %s", exc)
        return 1
    previous = {sig: signal.signal(sig, lambda *_: service.stop()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return service.serve()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class UplinkService:
    def __init__(self, config: DeviceConfig, broker: str | None = None) -> None:
        self.config = config
        self.cfg = config.uplink
        self.site = config.device.site
        self.device_id = config.device.id
        self.address = BrokerAddress.parse(broker or self.cfg.broker)
        self.client_id = client_id_for(self.cfg, f"sonopi-{self.site}-{self.device_id}", who="uplink")
        self.topics = {kind: topic(self.site, self.device_id, kind) for kind in ("result", "status", "heartbeat", "ack", "correction")}
        make_client(self.cfg, self.client_id)  # fail early on unusable TLS files / password file
        self.store = ResultStore(config.store_path)
        self.outbox = Outbox(
            self.store,
            window=self.cfg.window,
            ack_timeout_s=self.cfg.ack_timeout_s,
            send_thumbnail=self.cfg.send_thumbnail,
            thumbnail_max_bytes=self.cfg.thumbnail_max_bytes,
        )
        self.corrections = CorrectionOutbox(  # the same rules for corrections, with their own window and back-off
            self.store,
            window=self.cfg.window,
            ack_timeout_s=self.cfg.ack_timeout_s,
            send_thumbnail=False,
            thumbnail_max_bytes=0,
        )
        self.backoff = Backoff(self.cfg.reconnect_min_s, self.cfg.reconnect_max_s)
        self._pinger = watchdog.Pinger()
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._connack: int | None = None  # reason code of the last CONNACK (0 = accepted)
        self._ready = False  # subscribed to the ack topic: results may flow
        self._connected_at = utc_now_iso()

    # --- lifecycle -------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def serve(self) -> int:
        log.info("uplink %s -> %s (window %d, ack timeout %.1fs)", self.client_id, self.address, self.cfg.window, self.cfg.ack_timeout_s)
        watchdog.notify("READY=1")
        try:
            while not self._stop.is_set():
                client = self._connect()
                if client is None:
                    delay = self.backoff.next_delay()
                    log.info("uplink: next connection attempt in %.1fs", delay)
                    self._wait(delay)
                    continue
                self._session(client)
                if not self._stop.is_set():
                    self._wait(self.backoff.next_delay())
        finally:
            watchdog.notify("STOPPING=1")
            self._report(Connection.STOPPED)
            self.store.close()
        log.info("uplink stopped")
        return 0

    def _wait(self, seconds: float) -> None:
        """Sleep until ``seconds`` pass or stop is requested, keeping systemd's watchdog fed."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
            self._pinger.beat()
            self._stop.wait(min(left, 1.0))

    def _connect(self) -> mqtt.Client | None:
        client = make_client(self.cfg, self.client_id)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        offline = StatusMessage(state=DeviceStatus.OFFLINE, device_id=self.device_id, site=self.site)
        client.will_set(self.topics["status"], encode_status(offline), qos=QOS["status"], retain=True)
        self._connack, self._ready = None, False
        try:
            client.connect(self.address.host, self.address.port, keepalive=self.cfg.keepalive_s)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.warning("uplink: cannot connect to %s (%s)", self.address, exc)
            self._report(Connection.DISCONNECTED, f"cannot connect: {exc}")
            return None
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while self._connack is None and time.monotonic() < deadline and not self._stop.is_set():
            self._pinger.beat()
            if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                break
        if self._connack != 0:
            reason = "no CONNACK" if self._connack is None else mqtt.connack_string(self._connack)
            log.warning("uplink: broker %s refused or did not answer the connection (%s)", self.address, reason)
            self._report(Connection.DISCONNECTED, f"broker refused or did not answer: {reason}")
            client.disconnect()
            return None
        return client

    def _session(self, client: mqtt.Client) -> None:
        next_poll = next_correction_poll = 0.0
        next_heartbeat = time.monotonic()
        while True:
            busy = False
            self._pinger.beat()
            if self._stop.is_set():
                self._stop_cleanly(client)
                break
            now = time.monotonic()
            if self._ready:
                try:
                    if self.outbox.timed_out():
                        self.outbox.back_off()
                        next_poll = 0.0
                    # Refill in chunks (a quarter window): fewer, larger store transactions (each is an fsync).
                    if now >= next_poll and self.outbox.free_slots() >= max(1, self.outbox.effective_window // 4):
                        sent, full = self._send_results(client)
                        busy = full
                        next_poll = 0.0 if sent else now + self.cfg.poll_s
                    if now >= next_correction_poll:
                        next_correction_poll = 0.0 if self._drive_corrections(client) else now + self.cfg.poll_s
                    if now >= next_heartbeat:
                        self._send_heartbeat(client)
                        next_heartbeat = now + self.cfg.heartbeat_s
                except StoreError as exc:
                    log.error("uplink: %s", exc)
                    next_poll = next_correction_poll = now + max(1.0, self.cfg.poll_s)
            if client.loop(timeout=0.0 if busy else min(self.cfg.poll_s, 0.1)) != mqtt.MQTT_ERR_SUCCESS:
                log.warning("uplink: connection to %s lost", self.address)
                break
        self.outbox.rewind("disconnected")
        self.corrections.rewind("disconnected")
        self._ready = False
        if not self._stop.is_set():
            self._report(Connection.DISCONNECTED, "connection lost")

    def _report(self, state: Connection, detail: str = "") -> None:
        """Share the connection state with the UI (through the store); never fatal."""
        try:
            write_state(self.store, state, str(self.address), detail)
        except StoreError as exc:
            log.warning("uplink: cannot record connection state (%s)", exc)

    def _stop_cleanly(self, client: mqtt.Client) -> None:
        info = client.publish(self.topics["status"], encode_status(self._status(DeviceStatus.STOPPED)), qos=QOS["status"], retain=True)
        deadline = time.monotonic() + STOP_FLUSH_S
        while not info.is_published() and time.monotonic() < deadline:
            if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                break
        client.disconnect()

    # --- sending ---------------------------------------------------------------------------------

    def _send_results(self, client: mqtt.Client) -> tuple[int, bool]:
        """Publish the next window of results; returns (published, whether the window was filled)."""
        slots = self.outbox.free_slots()
        batch = self.outbox.next_messages(historical_before=self._connected_at)
        published: list[str] = []
        for message, payload in batch:
            info = client.publish(self.topics["result"], payload, qos=QOS["result"], retain=False)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                log.warning("uplink: publish failed (%s)", mqtt.error_string(info.rc))
                break
            published.append(message.result_id)
        self.outbox.sent(published)
        return len(published), len(batch) == slots and slots > 0

    def _drive_corrections(self, client: mqtt.Client) -> int:
        """Back off when the oldest correction in flight timed out; publish the next window. Returns how many went."""
        if self.corrections.timed_out():
            self.corrections.back_off()
        published: list[str] = []
        for message, payload in self.corrections.next_messages(historical_before=self._connected_at):
            info = client.publish(self.topics["correction"], payload, qos=QOS["correction"], retain=False)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                log.warning("uplink: publish failed (%s)", mqtt.error_string(info.rc))
                break
            published.append(message.correction_id)
        self.corrections.sent(published)
        return len(published)

    def _send_heartbeat(self, client: mqtt.Client) -> None:
        beat = build_heartbeat(
            self.store,
            site=self.site,
            device_id=self.device_id,
            interval_s=self.cfg.heartbeat_s,
            started_monotonic=self._started,
            model_path=self.config.model.path,
            check_model=True,
        )
        client.publish(self.topics["heartbeat"], encode_heartbeat(beat), qos=QOS["heartbeat"], retain=False)
        self._report(Connection.CONNECTED)  # refreshed with every heartbeat: a stale state means no uplink process

    def _status(self, state: DeviceStatus) -> StatusMessage:
        return StatusMessage(
            state=state,
            device_id=self.device_id,
            site=self.site,
            at=utc_now_iso(),
            software_version=__version__,
            model=self._model_identity(),
            backlog=self.store.backlog().pending,
        )

    def _model_identity(self) -> dict[str, str] | None:
        latest = self.store.history(limit=1)
        if latest:
            r = latest[0]
            return {"name": r.model_name, "version": r.model_version, "sha256": r.model_sha256}
        try:
            return load_bundle(self.config.model.path).identity
        except (SonopiError, OSError, ValueError) as exc:
            log.debug("uplink: no model identity for the birth message (%s)", exc)
            return None

    # --- paho callbacks (run inside client.loop(), on this thread) ------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._connack = int(reason_code.value) if hasattr(reason_code, "value") else int(reason_code)
        if self._connack != 0:
            return
        self.backoff.reset()
        self._connected_at = utc_now_iso()
        self.outbox.rewind("connected")
        self.corrections.rewind("connected")
        client.subscribe(self.topics["ack"], qos=QOS["ack"])
        try:
            birth = self._status(DeviceStatus.ONLINE)
        except StoreError as exc:
            log.error("uplink: %s", exc)
            birth = StatusMessage(state=DeviceStatus.ONLINE, device_id=self.device_id, site=self.site, at=utc_now_iso(), software_version=__version__)
        client.publish(self.topics["status"], encode_status(birth), qos=QOS["status"], retain=True)
        log.info("uplink: connected to %s as %s (backlog %s)", self.address, self.client_id, birth.backlog)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        failed = [rc for rc in reason_codes if rc.is_failure]
        if failed:
            log.error("uplink: the broker refused our ack subscription %s (%s): check the ACL", self.topics["ack"], failed[0])
            return
        self._ready = True

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic != self.topics["ack"]:
            return
        try:
            answer = decode_ack_topic(bytes(message.payload))
        except ContractError as exc:
            log.warning("uplink: ignoring a malformed ack (%s)", exc)
            return
        if isinstance(answer, NackMessage):
            self._on_nack(answer)
            return
        if isinstance(answer, CorrectionAckMessage):
            self._on_correction_ack(answer)
            return
        try:
            self.outbox.acked(answer.result_ids)
        except StoreError as exc:
            log.error("uplink: cannot record the hub's ack (%s); the results will be re-sent", exc)

    def _on_nack(self, nack: NackMessage) -> None:
        """Results the hub rejected for good: parked (``device history`` shows ``rejected: <reason>``), not
        re-sent; delivery goes on with the results after them."""
        for refusal in nack.rejected:
            log.warning(
                "uplink: result %s rejected by the hub (%s: %s); parked, not re-sent (device history shows it)",
                refusal.result_id,
                refusal.reason,
                refusal.detail,
            )
        try:
            self.outbox.rejected(nack.rejected)
        except StoreError as exc:  # the result stays pending: its next re-send is rejected and nacked again
            log.error("uplink: cannot park the results the hub rejected (%s); they will be re-sent", exc)

    def _on_correction_ack(self, answer: CorrectionAckMessage) -> None:
        for refusal in answer.rejected:
            log.warning(
                "uplink: correction %s rejected by the hub (%s: %s); parked, not re-sent (device history shows it)",
                refusal.correction_id,
                refusal.reason,
                refusal.detail,
            )
        try:
            self.corrections.acked(answer.correction_ids)
            self.corrections.rejected(answer.rejected)
        except StoreError as exc:  # they stay in flight: re-sent after the ack timeout, answered again
            log.error("uplink: cannot record the hub's answer to corrections (%s); they will be re-sent", exc)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._ready = False
