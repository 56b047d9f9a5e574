"""Hub configuration: one TOML file, validated at start-up (pydantic, unknown keys are errors)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from device.config import MqttConnection, load_toml_model


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttSection(MqttConnection):
    # fixed: the broker keeps this persistent session's queue while the hub is down
    client_id: str = Field(default="sonopi-hub", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    # Two or more hubs on one database: each subscribes as $share/<group>/..., so the broker gives every message to
    # one of them (docs/hub.md, "A second hub"). Unset: one hub, plain subscriptions.
    shared_group: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class DbSection(_Section):
    target: str = "var/hub.sqlite"  # SQLite file path, or a PostgreSQL DSN (postgresql://user@host/db)


class IngestSection(_Section):
    max_batch: int = Field(default=500, ge=1, le=10000)  # messages stored per transaction at most
    silent_after_intervals: float = Field(default=3.0, gt=1)  # heartbeat this late -> device shown silent
    heartbeat_keep_days: int = Field(default=30, ge=1)  # heartbeat history kept in the database
    # The reorder buffer (waiting_results) holds at most this many results per device; past it a device's early results
    # are deferred, not parked (docs/hub.md, "The reorder buffer's cap"). Keep it above the devices' [uplink] window.
    max_waiting_per_device: int = Field(default=1024, ge=1, le=1_000_000)


class ConsoleSection(_Section):
    # an unreviewed suspicious result older than this is listed on the console's Escalations page
    escalate_after_min: float = Field(default=60.0, gt=0, le=7 * 24 * 60)
    # the devices provisioned for this hub (one site/device_id a line, or a copy of the broker's acl file): the
    # console lists those that never connected (docs/web.md, "Devices"); unset: only devices that have spoken
    devices_file: Path | None = None


class HubConfig(_Section):
    mqtt: MqttSection = MqttSection()
    db: DbSection = DbSection()
    ingest: IngestSection = IngestSection()
    console: ConsoleSection = ConsoleSection()


def load_hub_config(path: str | Path | None) -> HubConfig:
    if path is None:
        return HubConfig()
    return load_toml_model(path, HubConfig)


DEFAULT_TOML = """\
# sonopi hub configuration (TOML)
[mqtt]
broker = "localhost:8883"
client_id = "sonopi-hub"      # fixed: the broker keeps this persistent session's queue while the hub is down;
                              # the sonopi broker binds the session to the certificate's CN (= username)
tls = true
ca_file = "/etc/sonopi-hub/ca.crt"
cert_file = "/etc/sonopi-hub/hub.crt"
key_file = "/etc/sonopi-hub/hub.key"
username = "sonopi-hub"
password_file = "/etc/sonopi-hub/mqtt.password"
# shared_group = "hubs"       # set on every hub when two or more share one PostgreSQL database

[db]
target = "/var/lib/sonopi-hub/hub.sqlite"   # or "postgresql://sonopi@dbhost/sonopi"

[ingest]
max_batch = 500
silent_after_intervals = 3.0
heartbeat_keep_days = 30
max_waiting_per_device = 1024   # reorder buffer per device (above the devices' [uplink] window; docs/hub.md)

[console]
escalate_after_min = 60       # unreviewed suspicious results older than this are escalated (web console)
# devices_file = "/etc/sonopi-hub/devices.txt"   # provisioned devices (site/device_id a line): never-connected ones shown
"""
