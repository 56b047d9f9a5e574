"""The outbox's delivery states, shared by results (``device.results``) and corrections (``device.link.corrections``):
stored on the device -> sent (handed to the broker) -> acked (received by the hub).

The values are the ones stored in SQLite (``results.delivery``, ``corrections.delivery``, checked there by the DDL)
and shown by ``device history``; a correction the hub refused for good reads as ``"rejected: <reason>"`` instead
(device/store.py), which is why the records' ``delivery`` fields stay ``str``.
"""

from __future__ import annotations

from enum import StrEnum


class Delivery(StrEnum):
    STORED = "stored"  # on the device
    SENT = "sent"  # handed to the broker
    ACKED = "acked"  # received by the hub
