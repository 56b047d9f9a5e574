"""Render /etc/sonopi/device.toml for one device from deploy/device-template.toml and validate it
with the device's own validator (device.config), so a bad id/site/broker fails on the workstation.

    python deploy/render_config.py --device-id ID --site SITE --secrets DIR [--broker H:P] --out FILE

Secrets found in DIR decide the [uplink] file settings: ca.crt/device.crt/device.key -> TLS with
client certificates; mqtt.password -> username = device id + password_file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from device.config import load_config  # noqa: E402  (after the sys.path line that makes the repository importable)
from device.errors import ConfigError  # noqa: E402  (after the sys.path line that makes the repository importable)

SECRETS_ON_DEVICE = Path("/etc/sonopi/secrets")


def render(device_id: str, site: str, secrets: Path, broker: str, source: str, pin: str) -> str:
    lines = []
    tls = all((secrets / n).is_file() for n in ("ca.crt", "device.crt", "device.key"))
    if tls:
        lines += [
            f'ca_file = "{SECRETS_ON_DEVICE}/ca.crt"',
            f'cert_file = "{SECRETS_ON_DEVICE}/device.crt"',
            f'key_file = "{SECRETS_ON_DEVICE}/device.key"',
        ]
    if (secrets / "mqtt.password").is_file():
        lines += [f'username = "{device_id}"', f'password_file = "{SECRETS_ON_DEVICE}/mqtt.password"']
    template = (REPO / "deploy" / "device-template.toml").read_text()
    return template.format(
        device_id=device_id,
        site=site,
        broker=broker,
        source=source,
        pin=pin,
        tls="true" if tls else "false",
        uplink_files="".join(line + "\n" for line in lines),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device-id", required=True)
    parser.add_argument("--site", required=True)
    parser.add_argument("--secrets", type=Path, required=True)
    parser.add_argument("--broker", default="hub.local:8883")
    parser.add_argument("--source", default="v4l2:/dev/video0")
    parser.add_argument("--pin", default="0000")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    text = render(args.device_id, args.site, args.secrets, args.broker, args.source, args.pin)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    try:
        load_config(tmp)
    except ConfigError as exc:
        tmp.unlink()
        print(f"render_config: error: generated configuration is invalid: {exc}", file=sys.stderr)
        return 1
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
