"""Device configuration: one TOML file, validated once at start-up.

Every section is a pydantic model with ``extra="forbid"``, so an unknown key or a bad value is
an error that names the key and the file. ``python -m device config default`` prints
:data:`DEFAULT_TOML`; ``python -m device config check FILE`` validates a file.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from device.barcode import DEFAULT_MAX_LENGTH, DEFAULT_MIN_LENGTH, DEFAULT_PATTERN, PatientIdError, PatientIdFormat
from device.decision import Mode
from device.errors import ConfigError
from device.spacing import PixelSpacing

DEFAULT_CONFIG_PATH = Path("/etc/sonopi/device.toml")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceSection(_Section):
    id: str = "sonopi-dev"
    site: str = "dev-site"
    data_dir: Path = Path("var")

    @field_validator("id", "site")
    @classmethod
    def _topic_safe(cls, value: str) -> str:
        # Both appear as MQTT topic levels: no '/', '+', '#', spaces.
        if not _NAME_RE.match(value):
            raise ValueError("must be 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit")
        return value


class ModelSection(_Section):
    path: Path = Path("models/sonopi-lite0")
    threads: int = Field(default=2, ge=1, le=8)
    public_key: Path | None = None  # Ed25519 key that bundle signatures must verify against (deploy/)
    # A site's own malignant threshold, for a scanner the bundle was not validated on: it may only be lower
    # (more sensitive) than the bundle's, which is checked when the bundle is loaded.
    malignant_threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    # The operating mode (docs/device.md): unset = the bundle's default mode. A mode the bundle does not carry
    # is refused when the bundle is loaded.
    mode: Mode | None = None


class SourceSection(_Section):
    spec: str = "folder:build/demo-frames"
    width: int | None = Field(default=None, ge=16, le=7680)
    height: int | None = Field(default=None, ge=16, le=4320)
    fps: float | None = Field(default=None, gt=0, le=240)
    fourcc: str | None = Field(default=None, min_length=4, max_length=4)
    reopen_interval_s: float = Field(default=2.0, gt=0, le=600)
    auto_crop: bool = True
    roi: tuple[int, int, int, int] | None = None  # x, y, width, height in source pixels
    roi_mode: Literal["override", "refine"] = "override"
    dicom_frame: int | None = Field(default=None, ge=0)  # cine: one chosen frame, or every frame when unset
    loop: bool = False  # file/folder sources: start over at the end (demo mode)
    # A capture card's or camera's mm per pixel [x, y], measured once on the scanner's depth scale (docs/lesion-outline.md);
    # files and DICOM never take it (a DICOM file carries its own). Changing the scanner's depth voids it.
    pixel_spacing_mm: tuple[float, float] | None = None

    @field_validator("pixel_spacing_mm")
    @classmethod
    def _plausible_spacing(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None:
            PixelSpacing(value[0], value[1], "config:[source]")  # ValueError names the axis and the range
        return value

    @field_validator("roi")
    @classmethod
    def _positive_roi(cls, value: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
        if value is not None and (value[0] < 0 or value[1] < 0 or value[2] <= 0 or value[3] <= 0):
            raise ValueError("roi is [x, y, width, height] with x, y >= 0 and width, height > 0")
        return value


class QualitySection(_Section):
    min_side_px: int = Field(default=64, ge=8)
    blank_mean_max: float = Field(default=10.0, ge=0, le=255)  # mean grey below this -> blank/black
    blank_std_max: float = Field(default=4.0, ge=0, le=128)  # or almost no texture
    saturated_fraction_max: float = Field(default=0.5, gt=0, le=1)
    colour_fraction_max: float = Field(default=0.05, gt=0, le=1)
    min_confidence: float | None = Field(default=None, ge=0, lt=1)  # overrides the manifest's when set
    max_entropy: float | None = Field(default=None, gt=0, le=1)


class StoreSection(_Section):
    path: Path | None = None  # default: <data_dir>/results.sqlite
    keep_images_days: int = Field(default=30, ge=0)  # full frames; 0 = never keep frames
    thumbnail_px: int = Field(default=160, ge=32, le=512)


def split_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IPv6 host in brackets) -> ``(host, port)``; ValueError when malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"broker {text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


class MqttConnection(_Section):
    """How to reach the broker: shared by the device's ``[uplink]`` and the hub's ``[mqtt]``."""

    broker: str = "localhost:1883"
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password_file: Path | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    client_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

    @field_validator("broker")
    @classmethod
    def _host_port(cls, value: str) -> str:
        split_host_port(value)
        return value

    @model_validator(mode="after")
    def _consistent_credentials(self) -> MqttConnection:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (TLS client certificate)")
        if not self.tls and (self.ca_file or self.cert_file):
            raise ValueError("ca_file/cert_file/key_file need tls = true")
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs username")
        return self


class UplinkSection(MqttConnection):
    enabled: bool = True
    # client_id: default the username (the broker binds the client id to it), else sonopi-<site>-<id>
    ack_timeout_s: float = Field(default=30.0, gt=0)
    window: int = Field(default=256, ge=1, le=10000)
    heartbeat_s: float = Field(default=60.0, gt=0, le=86400)  # the contract caps interval_s at 1e7 s; a day is plenty
    send_thumbnail: bool = True
    thumbnail_max_bytes: int = Field(default=16384, ge=1024, le=65536)
    reconnect_min_s: float = Field(default=1.0, gt=0, le=600)  # jittered exponential backoff between attempts
    reconnect_max_s: float = Field(default=120.0, gt=0, le=3600)
    poll_s: float = Field(default=0.2, gt=0, le=10)  # how often the outbox is checked for new results

    @model_validator(mode="after")
    def _consistent_backoff(self) -> UplinkSection:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self


class UiSection(_Section):
    fullscreen: bool = False
    pin: str = Field(default="0000", pattern=r"^[0-9]{4,8}$")
    idle_lock_s: int = Field(default=300, ge=30)
    live_analysis: bool = False
    preview_fps: float = Field(default=30.0, ge=1, le=60)  # file/folder sources: preview refresh rate
    still_hold_s: float = Field(default=0.0, ge=0, le=3600)  # file/folder sources: seconds per image; 0 = tap Next
    live_smoothing: float = Field(default=0.3, gt=0, le=1)  # live gauge: weight of the newest estimate
    source_roots: tuple[Path, ...] = (Path("/media"), Path("/run/media"), Path("/mnt"))  # where USB sticks mount
    disk_low_mb: int = Field(default=500, ge=0)  # banner below this much free space
    hub_probe_s: float = Field(default=30.0, ge=5, le=3600)  # how often the status bar checks the broker
    # The site's patient ID format (device/barcode.py): typed and scanned IDs must match it, whole, upper-cased.
    patient_id_pattern: str = DEFAULT_PATTERN
    patient_id_min_length: int = Field(default=DEFAULT_MIN_LENGTH, ge=1, le=64)
    patient_id_max_length: int = Field(default=DEFAULT_MAX_LENGTH, ge=1, le=64)
    patient_id_example: str = Field(default="A12345", min_length=1, max_length=64)

    @model_validator(mode="after")
    def _patient_id_format(self) -> UiSection:
        try:
            self.patient_id_format()
        except PatientIdError as exc:
            raise ValueError(f"patient_id_*: {exc}") from exc
        return self

    def patient_id_format(self) -> PatientIdFormat:
        return PatientIdFormat(self.patient_id_pattern, self.patient_id_min_length, self.patient_id_max_length, self.patient_id_example)


class DeviceConfig(_Section):
    device: DeviceSection = DeviceSection()
    model: ModelSection = ModelSection()
    source: SourceSection = SourceSection()
    quality: QualitySection = QualitySection()
    store: StoreSection = StoreSection()
    uplink: UplinkSection = UplinkSection()
    ui: UiSection = UiSection()

    @property
    def store_path(self) -> Path:
        return self.store.path or self.device.data_dir / "results.sqlite"


def load_config(path: str | Path | None) -> DeviceConfig:
    """Read and validate a TOML file; ``None`` gives the built-in defaults (development)."""
    if path is None:
        return DeviceConfig()
    return load_toml_model(path, DeviceConfig)


def parse_config(data: dict[str, Any], source: str = "<config>") -> DeviceConfig:
    return validate_model(data, DeviceConfig, source)


M = TypeVar("M", bound=BaseModel)


def load_toml_model(path: str | Path, model: type[M]) -> M:
    """Read a TOML file and validate it as ``model``; every problem is a ConfigError naming the file."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{file}: configuration file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read configuration ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML ({exc})") from exc
    return validate_model(data, model, str(file))


def validate_model(data: dict[str, Any], model: type[M], source: str) -> M:
    """Validate ``data``; the error names every bad or unknown key and the source."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown key '{key}'")
            else:
                problems.append(f"'{key}': {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(f"{source}: " + "; ".join(problems)) from exc


DEFAULT_TOML = """\
# sonopi device configuration (TOML). Validated at start-up: unknown keys are errors.
# Check a file with:  python -m device config check /etc/sonopi/device.toml

[device]
id = "sonopi-dev"          # unique per device; an MQTT topic level (letters, digits, . _ -)
site = "dev-site"          # clinic / site name; an MQTT topic level
data_dir = "var"           # results database and frames live here (/var/lib/sonopi on a device)

[model]
path = "models/sonopi-lite0"   # model bundle directory (model.tflite + manifest.json)
threads = 2                    # interpreter threads (a Pi 4 has 4 cores; the UI needs one)
# public_key = "/etc/sonopi/model-signing.pub"   # require bundles signed with this Ed25519 key
# mode = "balanced"            # operating mode: high_sensitivity | balanced | high_specificity (docs/device.md);
#                              # unset = the bundle's default mode; a mode the bundle does not carry is refused
# malignant_threshold = 0.01   # a site's stricter (lower) malignant threshold, e.g. for a scanner the model was
#                              # not validated on (docs/model.md); a value above the mode's is refused

[source]
spec = "folder:build/demo-frames"   # file:PATH | folder:PATH | video:PATH | dicom:PATH | v4l2:/dev/video0 | picamera
# width = 1920                # capture card: requested resolution / frame rate / FOURCC
# height = 1080
# fps = 30
# fourcc = "MJPG"
reopen_interval_s = 2.0       # capture card unplugged: try to reopen this often
auto_crop = true              # detect the ultrasound image on the scanner's screen and crop to it
# roi = [100, 80, 640, 480]   # manual region of interest: x, y, width, height (source pixels)
roi_mode = "override"         # "override": use roi as is; "refine": auto-crop inside roi
# dicom_frame = 0             # multi-frame DICOM (cine): this frame only; unset = every frame
# pixel_spacing_mm = [0.08, 0.08]  # capture card / camera: mm per pixel [x, y], calibrated on the depth scale
loop = false                  # file/folder sources: start over at the end

[quality]
min_side_px = 64              # cropped image smaller than this -> inconclusive
blank_mean_max = 10.0         # mean grey below this -> blank/black frame
blank_std_max = 4.0           # ... or almost no texture
saturated_fraction_max = 0.5  # more than this fraction of white pixels -> saturated
colour_fraction_max = 0.05    # more than this fraction of coloured pixels -> Doppler/photo
# min_confidence = 0.5        # override the model's low-confidence limit
# max_entropy = 0.9

[store]
# path = "/var/lib/sonopi/results.sqlite"   # default: <data_dir>/results.sqlite
keep_images_days = 30         # keep full frames this long (thumbnails are kept); 0 = never keep frames
thumbnail_px = 160

[uplink]
enabled = true
broker = "localhost:1883"     # HOST:PORT of the hospital's Mosquitto
tls = false
# ca_file = "/etc/sonopi/ca.crt"
# cert_file = "/etc/sonopi/device.crt"
# key_file = "/etc/sonopi/device.key"
# username = "sonopi-dev"
# password_file = "/etc/sonopi/mqtt.password"
keepalive_s = 30
ack_timeout_s = 30.0          # re-send a result the hub has not acknowledged after this long
window = 256                  # results in flight (sent, not yet acknowledged)
heartbeat_s = 60.0
send_thumbnail = true        # include the small JPEG thumbnail in each result message
thumbnail_max_bytes = 16384   # larger thumbnails are left out of the message (kept on the device)
# client_id = "sonopi-dev-site-sonopi-dev"   # MQTT client id; default the username, else sonopi-<site>-<device id>
reconnect_min_s = 1.0         # reconnect backoff: jittered, doubling from min to max
reconnect_max_s = 120.0
poll_s = 0.2                  # how often the uplink looks for new results in the store

[ui]
fullscreen = false            # kiosk: true on the device
pin = "0000"                  # settings PIN (4-8 digits)
idle_lock_s = 300             # lock screen (PIN) after this long without a touch
live_analysis = false         # start with the live score on
preview_fps = 30.0            # file/folder sources: preview refresh rate
still_hold_s = 0.0            # file/folder sources: seconds per image; 0 = tap Next
live_smoothing = 0.3          # live gauge: weight of the newest estimate (1 = no smoothing)
source_roots = ["/media", "/run/media", "/mnt"]   # where USB sticks with images are looked for
disk_low_mb = 500             # storage banner below this much free space
hub_probe_s = 30.0            # how often the status bar checks that the hub's broker is reachable
# patient_id_pattern = "[A-Z0-9](?:[A-Z0-9-]*[A-Z0-9])?"   # the site's patient ID (regular expression, whole ID)
# patient_id_min_length = 2
# patient_id_max_length = 20
# patient_id_example = "A12345"   # shown when an ID is refused
"""
