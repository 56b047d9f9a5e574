"""The production broker setup: TLS with a throwaway CA, per-device credentials and ACL made by
deploy/mosquitto/sonopi-mqtt.sh, two devices at once, forged and mismatched publications."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from device.link.contract import encode_result, topic
from device.link.uplink.outbox import message_from_record
from tests.device.link.test_uplink import Device, Hub, assert_delivered, backlog_empty, make_record, shut_down
from tests.mqtt_broker import BrokerTls, MosquittoBroker, mosquitto_passwd_binary, wait_for

pytestmark = pytest.mark.timeout(120)

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "sonopi-mqtt.sh"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None or mosquitto_passwd_binary() is None:
        pytest.skip("openssl and mosquitto_passwd are needed")
    root = tmp_path_factory.mktemp("pki") / "broker"
    subprocess.run([str(SCRIPT), "init", "--dir", str(root), "--host", "127.0.0.1"], check=True, capture_output=True)
    for site, device in (("site-a", "dev-1"), ("site-b", "dev-2")):
        subprocess.run([str(SCRIPT), "add-device", site, device, "--dir", str(root)], check=True, capture_output=True)
    return root


def test_credentials_are_private_files(pki: Path) -> None:
    secrets = [pki / "ca.key", pki / "server.key", pki / "hub.key", pki / "passwd", pki / "hub.password"]
    secrets += list((pki / "devices").glob("*/*"))
    assert len(secrets) > 10
    for path in secrets:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    acl = (pki / "acl").read_text()
    assert "topic write sonopi/v1/site-a/dev-1/result" in acl and "topic read sonopi/v1/site-b/dev-2/ack" in acl
    again = subprocess.run([str(SCRIPT), "add-device", "site-a", "dev-1", "--dir", str(pki)], capture_output=True, text=True)
    assert again.returncode != 0 and "already exists" in again.stderr


def _tls_client(pki: Path, creds: Path, username: str, password: str) -> mqtt.Client:
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"forger-{username.replace('/', '-')}")
    client.tls_set(ca_certs=str(pki / "ca.crt"), certfile=str(creds / "device.crt"), keyfile=str(creds / "device.key"), cert_reqs=ssl.CERT_REQUIRED)
    client.username_pw_set(username, password)
    return client


def test_tls_acl_two_devices_forgery_denied_and_mismatch_rejected(tmp_path: Path, pki: Path) -> None:
    broker = MosquittoBroker(
        tmp_path / "broker",
        password_file=pki / "passwd",
        acl_file=pki / "acl",
        tls=BrokerTls(ca_file=pki / "ca.crt", cert_file=pki / "server.crt", key_file=pki / "server.key"),
    )
    broker.start()
    hub = Hub(
        tmp_path,
        broker.address,
        config_text=(
            f'[mqtt]\ntls = true\nca_file = "{pki / "ca.crt"}"\ncert_file = "{pki / "hub.crt"}"\n'
            f'key_file = "{pki / "hub.key"}"\nusername = "sonopi-hub"\npassword_file = "{pki / "hub.password"}"\n'
        ),
    )
    devices = []
    try:
        hub.start()
        for site, device_id in (("site-a", "dev-1"), ("site-b", "dev-2")):
            creds = pki / "devices" / f"{site}-{device_id}"
            device = Device(
                tmp_path,
                site,
                device_id,
                broker.address,
                tls=True,
                ca_file=str(creds / "ca.crt"),
                cert_file=str(creds / "device.crt"),
                key_file=str(creds / "device.key"),
                username=f"{site}/{device_id}",
                password_file=str(creds / "mqtt.password"),
            )
            device.add(200)
            device.start_uplink()
            devices.append(device)
        for device in devices:
            wait_for(lambda: backlog_empty(device, 200), 60, f"{device.device_id} over TLS\n{device.log()}\n{hub.log()}")
            assert_delivered(hub, device)

        # dev-1's credentials try to publish as dev-2: the broker's ACL drops it.
        creds = pki / "devices" / "site-a-dev-1"
        forger = _tls_client(pki, creds, "site-a/dev-1", (creds / "mqtt.password").read_text().strip())
        forger.connect(broker.host, broker.port)
        forger.loop_start()
        forged = message_from_record(_stored(make_record("site-b", "dev-2", 0), seq=10_000), historical=False, prev_result_id=None)
        forger.publish(topic("site-b", "dev-2", "result"), encode_result(forged), qos=1).wait_for_publish(10)
        # Then, on its own topic, a payload that claims to be dev-2: the hub rejects the mismatch.
        mismatch = message_from_record(_stored(make_record("site-b", "dev-2", 1), seq=10_001), historical=False, prev_result_id=None)
        forger.publish(topic("site-a", "dev-1", "result"), encode_result(mismatch), qos=1).wait_for_publish(10)
        wait_for(lambda: any(r.reason == "topic_mismatch" for r in hub.store.rejections()), 20, "the mismatch rejection")
        forger.loop_stop()
        forger.disconnect()
        # Same connection, published first: had the broker let the forgery through, the hub would have it by now.
        assert hub.store.result(forged.result_id) is None
        assert hub.store.result(mismatch.result_id) is None
        assert hub.store.count_results(site="site-b", device_id="dev-2") == 200
        [rejection] = hub.store.rejections()
        assert (rejection.reason, rejection.site, rejection.device_id, rejection.count) == ("topic_mismatch", "site-a", "dev-1", 1)

        # A wrong password is refused; so is a client without a certificate.
        wrong = _tls_client(pki, creds, "site-a/dev-1", "not-the-password")
        refused: list[object] = []
        wrong.on_connect = lambda c, u, f, rc, p: refused.append(rc)
        wrong.connect(broker.host, broker.port)
        wrong.loop_start()
        wait_for(lambda: refused, 10, "the broker's answer to a wrong password")
        wrong.loop_stop()
        assert refused[0].is_failure
        bare = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="no-cert")
        bare.tls_set(ca_certs=str(pki / "ca.crt"), cert_reqs=ssl.CERT_REQUIRED)
        bare.username_pw_set("site-a/dev-1", (creds / "mqtt.password").read_text().strip())
        with pytest.raises((ssl.SSLError, OSError)):
            bare.connect(broker.host, broker.port)
            for _ in range(50):
                if bare.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                    raise OSError("connection closed by the broker")
    finally:
        shut_down(broker, hub, devices)


def _stored(record, seq: int):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    return replace(record, seq=seq)


def test_plain_device_cannot_reach_a_tls_broker(tmp_path: Path, pki: Path) -> None:
    """Misconfiguration (tls = false against the TLS listener) keeps results safely in the outbox."""
    broker = MosquittoBroker(
        tmp_path / "broker",
        password_file=pki / "passwd",
        acl_file=pki / "acl",
        tls=BrokerTls(ca_file=pki / "ca.crt", cert_file=pki / "server.crt", key_file=pki / "server.key"),
    )
    broker.start()
    device = Device(tmp_path, "site-a", "dev-1", broker.address)
    try:
        device.add(5)
        device.start_uplink()
        wait_for(lambda: "next connection attempt" in device.log(), 20, "a failed connection attempt")
        assert device.store.backlog().pending == 5
        assert {r.delivery for r in device.store.history()} == {"stored"}
    finally:
        device.stop_uplink()
        broker.kill()
