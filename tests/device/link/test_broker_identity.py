"""Issue 17, defect 2, against the shipped broker configuration: identities are bound end to end.

The broker runs ``deploy/mosquitto/sonopi.conf`` itself (only its paths and port rewritten), with the CA,
certificates and ACL made by ``deploy/mosquitto/sonopi-mqtt.sh``; the hub (``python -m hub serve``) and a
device uplink (``python -m device uplink``) run as real processes over TLS. Each attack from the issue is
tried with one device's real credentials and shown to fail:

* device A's certificate and password, connecting with the client id ``sonopi-hub``, neither kicks the hub
  off the broker nor wipes its persistent session (queued results survive);
* device A, connecting with device B's client id, does not kick B off;
* device A's certificate with device B's (or the hub's) username and password is still device A: the ACL
  drops what it publishes as B and refuses it B's acks and the hub's subscriptions.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from device.link.contract import ResultMessage, encode_result, topic
from device.link.uplink.outbox import message_from_record
from tests.device.link.test_uplink import Device, Hub, backlog_empty, drained_and_delivered, make_record, shut_down
from tests.hub.test_hub_security import pki  # noqa: F401  (the fixture: the script's CA, hub and devices A, B)
from tests.mqtt_broker import REPO, MosquittoBroker, free_port, wait_for

pytestmark = pytest.mark.timeout(180)

SCRIPT = REPO / "deploy" / "mosquitto" / "sonopi-mqtt.sh"
SHIPPED_CONF = REPO / "deploy" / "mosquitto" / "sonopi.conf"
A, B = ("site-a", "dev-1"), ("site-b", "dev-2")


def shipped_broker(workdir: Path, pki: Path) -> MosquittoBroker:
    """A Mosquitto running the shipped sonopi.conf: its paths point at ``pki``, its listener at a free
    loopback port; persistence and logging as on Debian (which sets them in mosquitto.conf)."""
    broker = MosquittoBroker(workdir, free_port())
    text = SHIPPED_CONF.read_text(encoding="utf-8").replace("/etc/mosquitto/sonopi", str(pki))
    assert "listener 8883\n" in text, "the shipped config's listener line changed; update this test"
    text = text.replace("listener 8883\n", f"listener {broker.port} {broker.host}\n")
    debian = ["persistence true", f"persistence_location {workdir}/", "log_dest stderr", "log_type all", "connection_messages true"]
    if os.geteuid() == 0:
        debian.insert(0, "user root")  # the pki files are root's (0600); Debian runs mosquitto as its own user
    broker.conf_path.write_text("\n".join(debian) + "\n" + text)
    return broker.start()


def creds(pki: Path, device: tuple[str, str]) -> Path:
    return pki / "devices" / f"{device[0]}-{device[1]}"


def password(pki: Path, device: tuple[str, str]) -> str:
    return (creds(pki, device) / "mqtt.password").read_text().strip()


def hub_config(pki: Path) -> str:
    return (
        f'[mqtt]\ntls = true\nca_file = "{pki / "ca.crt"}"\ncert_file = "{pki / "hub.crt"}"\n'
        f'key_file = "{pki / "hub.key"}"\nusername = "sonopi-hub"\npassword_file = "{pki / "hub.password"}"\n'
    )


def tls_device(tmp_path: Path, pki: Path, device: tuple[str, str], broker: MosquittoBroker) -> Device:
    files = creds(pki, device)
    return Device(
        tmp_path,
        device[0],
        device[1],
        broker.address,
        tls=True,
        ca_file=str(files / "ca.crt"),
        cert_file=str(files / "device.crt"),
        key_file=str(files / "device.key"),
        username=f"{device[0]}/{device[1]}",
        password_file=str(files / "mqtt.password"),
        ack_timeout_s=1.0,
    )


class Attacker:
    """A hand-made paho client holding one device's certificate, with whatever username, password and
    client id the attack needs. Driven by hand (no reconnects): every effect seen is the broker's."""

    def __init__(self, pki: Path, cert_of: tuple[str, str], *, client_id: str, username: str, secret: str) -> None:
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        files = creds(pki, cert_of)
        self.client.tls_set(
            ca_certs=str(files / "ca.crt"), certfile=str(files / "device.crt"), keyfile=str(files / "device.key"), cert_reqs=ssl.CERT_REQUIRED
        )
        self.client.username_pw_set(username, secret)
        self.connack: list[mqtt.ReasonCode] = []
        self.suback: list[list[mqtt.ReasonCode]] = []
        self.received: list[str] = []  # topics of the messages the broker delivered to it
        self.client.on_connect = lambda c, u, f, rc, p: self.connack.append(rc)
        self.client.on_message = lambda c, u, m: self.received.append(m.topic)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.suback.append(list(rcs))

    def connect(self, broker: MosquittoBroker) -> None:
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        wait_for(lambda: self.connack, 20, "the broker's CONNACK")
        assert not self.connack[0].is_failure, f"the broker refused the attacker's own credentials: {self.connack[0]}"

    def publish(self, device: tuple[str, str], message: ResultMessage) -> None:
        self.client.publish(topic(*device, "result"), encode_result(message), qos=1).wait_for_publish(20)

    def subscribe(self, *patterns: str) -> None:
        """Mosquitto grants every MQTT 3.1.1 subscription; its ACL decides, message by message, what is delivered."""
        before = len(self.suback)
        self.client.subscribe([(pattern, 1) for pattern in patterns])
        wait_for(lambda: len(self.suback) > before, 20, f"the SUBACK for {patterns}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def message(device: tuple[str, str], i: int, seq: int) -> ResultMessage:
    record = replace(make_record(*device, i), seq=seq)
    return message_from_record(record, historical=False, prev_result_id=None)


@pytest.fixture
def rig(tmp_path: Path, pki: Path):  # type: ignore[no-untyped-def]
    broker = shipped_broker(tmp_path / "broker", pki)
    hub = Hub(tmp_path, broker.address, config_text=hub_config(pki))
    devices: list[Device] = []
    attackers: list[Attacker] = []
    try:
        yield broker, hub, devices, attackers
    finally:
        for attacker in attackers:
            attacker.close()
        shut_down(broker, hub, devices)


def taken_over(broker: MosquittoBroker, client_id: str) -> bool:
    """Whether the broker ever closed ``client_id``'s connection for a newer one with the same id."""
    return f"Client {client_id} already connected, closing old connection" in broker.full_log()


def hub_connects(hub: Hub, times: int) -> list[str]:
    lines = [line for line in (hub.dir / "hub.log").read_text(errors="replace").splitlines() if "hub: connected to" in line]
    return lines if len(lines) >= times else []


def test_device_credentials_cannot_take_the_hub_client_id(tmp_path: Path, pki: Path, rig) -> None:  # type: ignore[no-untyped-def]
    broker, hub, devices, attackers = rig
    hub.start()
    wait_for(lambda: hub_connects(hub, 1), 30, f"the hub to connect\n{hub.log()}\n{broker.log()}")
    b = tls_device(tmp_path, pki, B, broker)
    devices.append(b)
    b.add(30)
    b.start_uplink()
    drained_and_delivered(hub, b, 30, 60, "device B over TLS")

    # Device A's own, valid credentials, asking for the hub's client id while the hub is connected.
    thief = Attacker(pki, A, client_id="sonopi-hub", username="site-a/dev-1", secret=password(pki, A))
    attackers.append(thief)
    thief.connect(broker)
    probe = message(A, 0, seq=1)
    thief.publish(A, probe)  # after its CONNECT: a hub still connected and subscribed receives it
    wait_for(lambda: hub.store.result(probe.result_id) is not None, 30, f"the hub, still connected, to store A's result\n{hub.log()}\n{broker.log()}")
    assert "hub: disconnected from the broker" not in hub.full_log(), "the hub was kicked off the broker"
    assert not taken_over(broker, "sonopi-hub"), "the broker closed the hub's connection for the thief's"
    thief.close()
    attackers.remove(thief)

    # The hub is down: the broker queues B's results in the hub's persistent session. A's credentials asking
    # for the hub's id with a clean session must not wipe that session.
    hub.stop()
    b.add(20)
    wait_for(lambda: all(r.delivery != "stored" for r in b.store.history(limit=None)), 30, f"B to publish while the hub is down\n{b.log()}")
    thief = Attacker(pki, A, client_id="sonopi-hub", username="site-a/dev-1", secret=password(pki, A))
    attackers.append(thief)
    thief.connect(broker)
    thief.close()
    attackers.remove(thief)
    b.stop_uplink()  # no re-sends from here on: what the hub gets next is what the broker kept for it
    hub.start()
    wait_for(lambda: hub_connects(hub, 2), 30, f"the hub to reconnect\n{hub.log()}")
    assert "session present: True" in hub_connects(hub, 2)[1], "the hub's persistent session was wiped"
    wait_for(lambda: hub.count(b) == 50, 60, f"B's queued results from the kept session\n{hub.log()}")


def test_a_device_cannot_kick_another_device_off(tmp_path: Path, pki: Path, rig) -> None:  # type: ignore[no-untyped-def]
    broker, hub, devices, attackers = rig
    hub.start()
    # subscribed before the probes below are published: a result published before the hub listens is never its to store
    wait_for(lambda: hub_connects(hub, 1), 30, f"the hub to connect\n{hub.log()}")
    b = tls_device(tmp_path, pki, B, broker)
    devices.append(b)
    b.start_uplink()
    wait_for(lambda: "uplink: connected to" in b.log(), 30, f"device B to connect\n{b.log()}\n{broker.log()}")
    # Device B's client id as the uplink chooses it today and as it chose it before identities were bound.
    # Each thief closes before the next connects: both become site-a/dev-1 at the broker, and a second one
    # would take over the first (A displacing A, which is allowed and not what this test is about).
    for seq, stolen in enumerate(("site-b/dev-2", "sonopi-site-b-dev-2"), start=2):
        thief = Attacker(pki, A, client_id=stolen, username="site-a/dev-1", secret=password(pki, A))
        attackers.append(thief)
        thief.connect(broker)
        probe = message(A, seq, seq=seq)
        thief.publish(A, probe)
        wait_for(lambda: hub.store.result(probe.result_id) is not None, 30, f"A's own result at the hub\n{hub.log()}")
        thief.close()
        attackers.remove(thief)
    b.add(10)
    wait_for(lambda: backlog_empty(b, 10), 60, f"B to deliver\n{b.log()}")
    uplink_log = b.full_log()
    assert "uplink: connection to" not in uplink_log, f"device B was kicked off\n{b.log()}"
    assert uplink_log.count("uplink: connected to") == 1
    assert " as site-b/dev-2 " in uplink_log, "the uplink's client id is its username, the id the broker binds"
    assert not taken_over(broker, "site-b/dev-2"), "the broker closed device B's connection for the thief's"
    assert not taken_over(broker, "sonopi-site-b-dev-2")


def test_a_certificate_binds_its_device(tmp_path: Path, pki: Path, rig) -> None:  # type: ignore[no-untyped-def]
    broker, hub, devices, attackers = rig
    hub.start()
    wait_for(lambda: hub_connects(hub, 1), 30, f"the hub to connect\n{hub.log()}")
    # Device A's certificate with device B's username and password.
    forger = Attacker(pki, A, client_id="forger", username="site-b/dev-2", secret=password(pki, B))
    attackers.append(forger)
    forger.connect(broker)
    forger.subscribe(topic(*B, "ack"), topic(*A, "ack"))
    b = tls_device(tmp_path, pki, B, broker)  # the real device B: the hub acks its results on B's ack topic
    devices.append(b)
    b.add(5)
    b.start_uplink()
    wait_for(lambda: backlog_empty(b, 5), 60, f"device B to deliver\n{b.log()}")
    forged, own = message(B, 0, seq=1000), message(A, 1, seq=1)
    forger.publish(B, forged)
    forger.publish(A, own)  # the same connection, after the forgery: once this is stored, the forgery had its chance
    wait_for(lambda: hub.store.result(own.result_id) is not None, 30, f"A's own result at the hub\n{hub.log()}")
    assert hub.store.result(forged.result_id) is None, "A's certificate published as device B"
    wait_for(lambda: topic(*A, "ack") in forger.received, 30, "the hub's ack of A's own result")
    assert topic(*B, "ack") not in forger.received, "A's certificate read B's acks"

    # Device A's certificate with the hub's username, password and client id: still device A.
    hub_password = (pki / "hub.password").read_text().strip()
    impostor = Attacker(pki, A, client_id="sonopi-hub", username="sonopi-hub", secret=hub_password)
    attackers.append(impostor)
    impostor.connect(broker)
    impostor.subscribe("sonopi/v1/+/+/result", topic(*A, "ack"))
    later = replace(message(A, 2, seq=2), prev_result_id=own.result_id)
    impostor.publish(A, later)
    wait_for(lambda: hub.store.result(later.result_id) is not None, 30, f"the hub, still connected\n{hub.log()}")
    wait_for(lambda: topic(*A, "ack") in impostor.received, 30, "the hub's ack of A's later result")
    assert not any(t.endswith("/result") for t in impostor.received), "A's certificate read results as the hub"
    assert "hub: disconnected from the broker" not in hub.full_log()


def test_revoked_device_and_second_hub_account(tmp_path: Path, pki: Path, rig) -> None:  # type: ignore[no-untyped-def]
    """``revoke-device`` leaves a certificate that connects but may do nothing; ``add-hub`` makes a second hub
    identity with the hub's rights and its own session (CN = client id), whose shared subscription
    (``$share/...``, as two hubs would split the load) the ACL allows."""
    broker, hub, devices, attackers = rig
    work = tmp_path / "pki-copy"
    shutil.copytree(pki, work)  # the module's pki stays as it is for the other tests
    subprocess.run([str(SCRIPT), "revoke-device", *A, "--dir", str(work)], check=True, capture_output=True)
    subprocess.run([str(SCRIPT), "add-hub", "sonopi-hub-2", "--dir", str(work)], check=True, capture_output=True)
    acl = (work / "acl").read_text()
    assert "user site-a/dev-1" not in acl and "site-a/dev-1/result" not in acl and "user site-b/dev-2" in acl
    assert "user sonopi-hub-2\ntopic read sonopi/v1/+/+/result" in acl
    broker.kill()
    broker = shipped_broker(tmp_path / "broker2", work)
    hub = Hub(tmp_path / "second", broker.address, config_text=hub_config(work))
    hub.start()
    try:
        wait_for(lambda: hub_connects(hub, 1), 30, f"the hub to connect\n{hub.log()}")
        revoked = Attacker(work, A, client_id="x", username="site-a/dev-1", secret="")
        revoked.connect(broker)
        gone = message(A, 0, seq=1)
        revoked.publish(A, gone)
        revoked.close()
        hub2 = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="anything", clean_session=True, protocol=mqtt.MQTTv311)
        hub2.tls_set(
            ca_certs=str(work / "ca.crt"),
            certfile=str(work / "sonopi-hub-2.crt"),
            keyfile=str(work / "sonopi-hub-2.key"),
            cert_reqs=ssl.CERT_REQUIRED,
        )
        seen: list[str] = []
        hub2.on_message = lambda c, u, m: seen.append(m.topic)
        subscribed: list[bool] = []
        hub2.on_subscribe = lambda *a: subscribed.append(True)
        hub2.connect(broker.host, broker.port)
        hub2.loop_start()
        hub2.subscribe("$share/sonopi-hubs/sonopi/v1/+/+/result", qos=1)  # as two hubs share the load
        wait_for(lambda: subscribed, 20, "the second hub's SUBACK")
        b = Device(
            tmp_path / "second",
            *B,
            broker.address,
            tls=True,
            ca_file=str(creds(work, B) / "ca.crt"),
            cert_file=str(creds(work, B) / "device.crt"),
            key_file=str(creds(work, B) / "device.key"),
            username="site-b/dev-2",
            ack_timeout_s=1.0,
        )
        devices.append(b)
        b.add(3)
        b.start_uplink()
        wait_for(lambda: backlog_empty(b, 3), 60, f"device B to deliver\n{b.log()}")
        wait_for(lambda: topic(*B, "result") in seen, 20, "the second hub account to read B's results")
        hub2.disconnect()
        hub2.loop_stop()
        assert hub.store.result(gone.result_id) is None, "a revoked device's result was stored"
        assert "hub: disconnected from the broker" not in hub.full_log(), "the second hub account took the first's session"
    finally:
        hub.stop()
        broker.kill()
