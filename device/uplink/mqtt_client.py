"""Building a paho-mqtt 2.x client from the ``[uplink]`` configuration, and the reconnect backoff."""

from __future__ import annotations

import logging
import random
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt

from device.config import UplinkSection
from device.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "BrokerAddress":
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"broker {text!r}: expected HOST:PORT")
        return cls(host.strip("[]"), int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class Backoff:
    """Exponential backoff with jitter: the n-th wait is uniform in [d/2, d] with d = min(max, min * 2^n).

    The jitter spreads the reconnects of many devices after a hub or broker restart."""

    min_s: float
    max_s: float
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.min_s * (2 ** min(self.attempts, 30)))
        self.attempts += 1
        return self.rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempts = 0


def read_password(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"uplink password_file {path}: cannot read ({exc})") from exc


def make_client(cfg: UplinkSection, client_id: str, *, clean_session: bool = True) -> mqtt.Client:
    """A paho client (VERSION2 callbacks, MQTT 3.1.1) with TLS and credentials applied; not yet connected."""
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        protocol=mqtt.MQTTv311,
        reconnect_on_failure=False,  # the service owns reconnects (jittered backoff, fresh session state)
    )
    if cfg.tls:
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(cfg, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"uplink {name} {path}: file not found")
        try:
            client.tls_set(
                ca_certs=str(cfg.ca_file) if cfg.ca_file else None,
                certfile=str(cfg.cert_file) if cfg.cert_file else None,
                keyfile=str(cfg.key_file) if cfg.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(f"uplink TLS files unusable ({exc})") from exc
    if cfg.username is not None:
        client.username_pw_set(cfg.username, read_password(cfg.password_file))
    client.max_inflight_messages_set(max(20, cfg.window))
    client.max_queued_messages_set(0)
    return client
