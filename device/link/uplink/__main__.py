"""``python -m device.link.uplink --config FILE [--broker HOST:PORT]``: the same as ``python -m device uplink``."""

from __future__ import annotations

import argparse
import logging
import sys

from device.config import load_config
from device.errors import ConfigError
from device.link.uplink.service import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m device.link.uplink", description=__doc__)
    parser.add_argument("--config", help="device configuration (TOML); default: built-in development defaults")
    parser.add_argument("--broker", help="HOST:PORT, overrides [uplink] broker")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run(config, args.broker)


if __name__ == "__main__":
    sys.exit(main())
