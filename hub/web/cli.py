"""``python -m hub web`` and ``python -m hub user add|disable|enable|password|list``.

Hooked into the hub's CLI (``hub/cli.py``) by :func:`add_commands` and :func:`run`; importing this
module does not import FastAPI, so the hub CLI works without the ``web`` extra.

    python -m hub web [--db PATH|DSN] [--host 127.0.0.1] [--port 8080] [--insecure-cookies] [--hsts]
                      [--forwarded-allow-ips 127.0.0.1]
    python -m hub user add NAME --role operator [--password-stdin]
    python -m hub user disable NAME
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys

from device.errors import SonopiError

log = logging.getLogger(__name__)

COMMANDS = ("web", "user")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Add ``web`` and ``user`` to the hub's sub-command parser (``common``: --config/--db)."""
    web = sub.add_parser("web", parents=[common], help="the operator's web console (behind a TLS reverse proxy)")
    web.add_argument("--host", default="127.0.0.1", help="listen address (default: loopback only)")
    web.add_argument("--port", type=int, default=8080)
    web.add_argument("--insecure-cookies", action="store_true", help="plain-HTTP development only: session cookie without Secure/__Host-")
    web.add_argument("--hsts", action="store_true", help="send Strict-Transport-Security")
    web.add_argument("--forwarded-allow-ips", default=None, help="trust X-Forwarded-For/-Proto from these addresses (the reverse proxy)")
    web.add_argument("--live-poll", type=float, default=1.0, help="seconds between inbox live-update checks")
    web.add_argument("--devices-refresh", type=float, default=5.0, help="seconds between devices page refreshes")

    user = sub.add_parser("user", parents=[common], help="console accounts")
    actions = user.add_subparsers(dest="user_command", required=True)
    add = actions.add_parser("add", help="create an account (asks for the password)")
    add.add_argument("username")
    add.add_argument("--role", choices=("viewer", "operator", "admin"), default="operator")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    for name, text in (
        ("disable", "disable an account and end its sessions"),
        ("enable", "re-enable an account"),
        ("password", "set a new password (ends the account's sessions)"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("username")
        if name == "password":
            action.add_argument("--password-stdin", action="store_true")
    actions.add_parser("list", help="list accounts")


def run(args: argparse.Namespace, target: str) -> int:
    """Run ``web`` or ``user`` against the hub database ``target``."""
    if args.command == "web":
        return _web(args, target)
    return _user(args, target)


def _web(args: argparse.Namespace, target: str) -> int:
    import uvicorn

    from hub.config import load_hub_config
    from hub.web.app import create_app
    from hub.web.config import WebConfig

    hub_config = load_hub_config(args.config)
    config = WebConfig(
        db=target,
        host=args.host,
        port=args.port,
        secure_cookies=not args.insecure_cookies,
        hsts=args.hsts,
        live_poll_s=args.live_poll,
        devices_refresh_s=args.devices_refresh,
        forwarded_allow_ips=args.forwarded_allow_ips,
        silent_after_intervals=hub_config.ingest.silent_after_intervals,
        escalate_after_s=hub_config.console.escalate_after_min * 60,
        devices_file=hub_config.console.devices_file,
    )
    app = create_app(config)
    if not config.secure_cookies:
        log.warning("--insecure-cookies: session cookies are sent over plain HTTP; development only")
    log.info("web console on http://%s:%d (database: %s)", config.host, config.port, app.state.services.db.target)
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_level="info",
        access_log=True,
        proxy_headers=config.forwarded_allow_ips is not None,
        forwarded_allow_ips=config.forwarded_allow_ips,
        timeout_graceful_shutdown=3,
        server_header=False,
    )
    return 0


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat: ") != first:
        raise SonopiError("passwords differ")
    return first


def _user(args: argparse.Namespace, target: str) -> int:
    from hub.web.accounts import Accounts
    from hub.web.db import WebDb
    from hub.web.reviews import Reviews

    db = WebDb.open(target)
    try:
        accounts, reviews = Accounts(db), Reviews(db)
        actor = f"cli:{getpass.getuser()}"
        if args.user_command == "list":
            for u in accounts.users():
                print(f"{u.username:24} {u.role:9} {'disabled' if u.disabled else 'active':9} {u.created_at}")
            return 0
        if args.user_command == "add":
            user = accounts.add_user(args.username, _read_password(args.password_stdin), args.role)
            reviews.audit("user:add", actor, f"{user.username} ({user.role})")
            print(f"added {user.username} ({user.role})")
        elif args.user_command in ("disable", "enable"):
            user = accounts.set_disabled(args.username, args.user_command == "disable")
            reviews.audit(f"user:{args.user_command}", actor, user.username)
            print(f"{args.user_command}d {user.username}")
        else:
            accounts.set_password(args.username, _read_password(args.password_stdin))
            reviews.audit("user:password", actor, args.username)
            print(f"password changed for {args.username}")
        return 0
    finally:
        db.close()
