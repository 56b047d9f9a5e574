"""Connecting to the MQTT broker: one place for the broker address, TLS and credentials.

Used by the device uplink (``device/link/uplink/``), the hub (``hub/service.py``) and the UI's "Test hub"
button (``ui/hub.py``); all take their
settings from a :class:`device.config.MqttConnection` section. paho-mqtt 2.x, VERSION2 callbacks.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device.config import MqttConnection, split_host_port
from device.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> BrokerAddress:
        try:
            return cls(*split_host_port(text))
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def read_password(path: Path | None, who: str = "mqtt") -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{who} password_file {path}: cannot read ({exc})") from exc


def client_id_for(conn: MqttConnection, fallback: str, who: str = "mqtt") -> str:
    """The MQTT client id to connect with: ``client_id`` when configured, else the username, else ``fallback``.

    The sonopi broker binds client ids to identities (``use_username_as_clientid``, with the certificate's CN
    as the username): whatever id a client asks for, its session is its username's. Using the username here
    makes the id in our logs the one the broker uses. A configured ``client_id`` that differs from the
    username still connects (the broker replaces it) but is logged once as ignored by such a broker."""
    if conn.client_id is not None:
        if conn.username is not None and conn.client_id != conn.username:
            log.warning(
                "%s: client_id %r differs from username %r; a broker that binds client ids to identities "
                "(deploy/mosquitto/sonopi.conf: use_username_as_clientid) uses %r",
                who,
                conn.client_id,
                conn.username,
                conn.username,
            )
        return conn.client_id
    return conn.username or fallback


def new_client(
    conn: MqttConnection,
    client_id: str,
    *,
    clean_session: bool,
    manual_ack: bool = False,
    reconnect_on_failure: bool = True,
    who: str = "mqtt",
) -> mqtt.Client:
    """A paho client (VERSION2 callbacks, MQTT 3.1.1) with TLS and credentials applied; not yet connected.
    Missing or unusable TLS files and an unreadable password file are ConfigErrors naming the file."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        protocol=mqtt.MQTTv311,
        reconnect_on_failure=reconnect_on_failure,
        manual_ack=manual_ack,
    )
    if conn.tls:
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(conn, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{who} {name} {path}: file not found")
        try:
            client.tls_set(
                ca_certs=str(conn.ca_file) if conn.ca_file else None,
                certfile=str(conn.cert_file) if conn.cert_file else None,
                keyfile=str(conn.key_file) if conn.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(f"{who} TLS files unusable ({exc})") from exc
    if conn.username is not None:
        client.username_pw_set(conn.username, read_password(conn.password_file, who))
    return client
