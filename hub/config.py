"""Hub configuration: one TOML file, validated at start-up (pydantic, unknown keys are errors)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from device.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttSection(_Section):
    broker: str = "localhost:1883"
    client_id: str = Field(default="sonopi-hub", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password_file: Path | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)

    @field_validator("broker")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("broker must be HOST:PORT")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "MqttSection":
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs username")
        return self


class DbSection(_Section):
    target: str = "var/hub.sqlite"  # SQLite file path, or a PostgreSQL DSN (postgresql://user@host/db)


class IngestSection(_Section):
    max_batch: int = Field(default=500, ge=1, le=10000)  # messages stored per transaction at most
    silent_after_intervals: float = Field(default=3.0, gt=1)  # heartbeat this late -> device shown silent
    heartbeat_keep_days: int = Field(default=30, ge=1)  # heartbeat history kept in the database


class HubConfig(_Section):
    mqtt: MqttSection = MqttSection()
    db: DbSection = DbSection()
    ingest: IngestSection = IngestSection()


def load_hub_config(path: str | Path | None) -> HubConfig:
    if path is None:
        return HubConfig()
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{file}: configuration file not found") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read configuration ({exc})") from exc
    try:
        return HubConfig.model_validate(data)
    except ValidationError as exc:
        problems = [f"'{'.'.join(str(p) for p in e['loc'])}': {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{file}: " + "; ".join(problems)) from exc


DEFAULT_TOML = """\
# sonopi hub configuration (TOML)
[mqtt]
broker = "localhost:8883"
client_id = "sonopi-hub"      # fixed: the broker keeps this persistent session's queue while the hub is down
tls = true
ca_file = "/etc/sonopi-hub/ca.crt"
cert_file = "/etc/sonopi-hub/hub.crt"
key_file = "/etc/sonopi-hub/hub.key"
username = "sonopi-hub"
password_file = "/etc/sonopi-hub/mqtt.password"

[db]
target = "/var/lib/sonopi-hub/hub.sqlite"   # or "postgresql://sonopi@dbhost/sonopi"

[ingest]
max_batch = 500
silent_after_intervals = 3.0
heartbeat_keep_days = 30
"""
