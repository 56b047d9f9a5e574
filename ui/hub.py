"""Hub connection checks until the uplink process publishes its own state: a cheap TCP reachability
probe for the status bar, and a real MQTT connect/disconnect for the Settings "Test hub" button."""

from __future__ import annotations

import logging
import socket
import threading
import uuid

from device.config import UplinkSection
from device.errors import ConfigError, StoreError
from device.link.mqtt import BrokerAddress, new_client
from device.link.uplink.state import read_state
from device.store import ResultStore

log = logging.getLogger(__name__)


def tcp_reachable(broker: str, timeout_s: float = 2.0) -> tuple[bool, str]:
    """Can a TCP connection be opened to HOST:PORT? (No MQTT, no credentials: a network check.)"""
    try:
        address = BrokerAddress.parse(broker)
        with socket.create_connection((address.host, address.port), timeout=timeout_s):
            return True, f"{broker} reachable"
    except ConfigError as exc:
        return False, str(exc)
    except OSError as exc:
        return False, f"{broker}: {exc.strerror or exc}"


def mqtt_connect_test(uplink: UplinkSection, timeout_s: float = 5.0) -> tuple[bool, str]:
    """Connect to the broker with the uplink's TLS settings and credentials, then disconnect."""
    done = threading.Event()
    outcome: dict[str, object] = {}

    def on_connect(client, userdata, flags, reason_code, properties=None) -> None:  # paho callback signature
        outcome["code"] = reason_code
        done.set()

    try:
        address = BrokerAddress.parse(uplink.broker)
        client = new_client(uplink, f"sonopi-ui-test-{uuid.uuid4().hex[:8]}", clean_session=True, reconnect_on_failure=False, who="hub test")
    except ConfigError as exc:
        return False, str(exc)
    client.on_connect = on_connect
    try:
        client.connect_async(address.host, address.port, keepalive=10)
        client.loop_start()
        if not done.wait(timeout_s):
            return False, f"{uplink.broker}: no answer within {timeout_s:.0f} s"
        code = outcome["code"]
        if getattr(code, "is_failure", False):
            return False, f"{uplink.broker}: refused ({code})"
        return True, f"{uplink.broker}: connected"
    except (OSError, ValueError) as exc:
        return False, f"{uplink.broker}: {exc}"
    finally:
        try:
            client.disconnect()
            client.loop_stop()
        except Exception:  # best effort: the test is over either way
            log.debug("MQTT test cleanup failed", exc_info=True)


def hub_status(store: ResultStore, broker: str, heartbeat_s: float) -> tuple[bool, str]:
    """The status bar's hub state: the uplink process's own connection state when it has shared one
    through the store; a TCP reachability probe when no uplink ever ran on this store (development)."""
    try:
        state = read_state(store)
    except StoreError as exc:
        return False, f"cannot read the uplink state ({exc})"
    if state is None:
        return tcp_reachable(broker)
    if state.state == "stopped" or state.age_s() > 3 * heartbeat_s + 30:
        return False, f"the uplink process is not running (last seen {state.updated_at}); results stay on the device"
    if state.state == "connected":
        return True, f"uplink connected to {state.broker}"
    return False, f"uplink {state.state}: {state.detail or state.broker}"
