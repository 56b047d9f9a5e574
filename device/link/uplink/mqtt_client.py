"""The uplink's paho-mqtt client (built by :func:`device.link.mqtt.new_client`) and its reconnect backoff."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from device.config import UplinkSection
from device.link.mqtt import new_client

log = logging.getLogger(__name__)


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


def make_client(cfg: UplinkSection, client_id: str) -> mqtt.Client:
    """The uplink's paho client: clean session, no paho reconnects (the service owns them with a
    jittered backoff and fresh session state), paho's own queue off (the SQLite outbox is the queue)."""
    client = new_client(cfg, client_id, clean_session=True, reconnect_on_failure=False, who="uplink")
    client.max_inflight_messages_set(max(20, cfg.window))
    client.max_queued_messages_set(0)
    return client
