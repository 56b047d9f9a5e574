"""A real Mosquitto broker for tests: started on a free loopback port, killable and restartable.

    from tests.mqtt_broker import MosquittoBroker, mosquitto_broker   # the fixture, if wanted

    with MosquittoBroker(tmp_path) as broker:      # anonymous, plain TCP, persistence on
        broker.address                             # "127.0.0.1:PORT"
        broker.kill(); broker.start()              # SIGKILL, then the same port and persistence dir

Options: ``password_file``/``acl_file`` (anonymous access off), ``tls=BrokerTls(...)``,
``extra_conf`` lines. Skips the test when no mosquitto binary is installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

log = logging.getLogger(__name__)

CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def mosquitto_binary() -> str | None:
    for path in CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("mosquitto")


def mosquitto_passwd_binary() -> str | None:
    return shutil.which("mosquitto_passwd") or next((p for p in ("/usr/bin/mosquitto_passwd",) if os.access(p, os.X_OK)), None)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class BrokerTls:
    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = True
    use_identity_as_username: bool = False


class MosquittoBroker:
    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        tls: BrokerTls | None = None,
        persistence: bool = True,
        extra_conf: str = "",
    ) -> None:
        binary = mosquitto_binary()
        if binary is None:
            pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run does this)")
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.conf_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        lines = [
            "user root" if os.geteuid() == 0 else "",
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if password_file or (tls and tls.use_identity_as_username) else 'true'}",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "autosave_interval 1",
            "max_queued_messages 100000",
            "max_inflight_messages 100",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "connection_messages true",
        ]
        if password_file:
            lines.append(f"password_file {password_file}")
        if acl_file:
            lines.append(f"acl_file {acl_file}")
        if tls:
            lines += [
                f"cafile {tls.ca_file}",
                f"certfile {tls.cert_file}",
                f"keyfile {tls.key_file}",
                f"require_certificate {'true' if tls.require_certificate else 'false'}",
                f"use_identity_as_username {'true' if tls.use_identity_as_username else 'false'}",
            ]
        self.conf_path.write_text("\n".join(line for line in lines if line) + "\n" + extra_conf + "\n")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 10.0) -> MosquittoBroker:
        if self.running:
            return self
        log_file = open(self.log_path, "ab")
        self._proc = subprocess.Popen([self.binary, "-c", str(self.conf_path)], stdout=log_file, stderr=log_file)
        log_file.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self._proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.address} within {timeout_s}s:\n{self.log()}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Clean shutdown (SIGTERM): mosquitto saves its persistence file."""
        self._signal(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """Abrupt death (SIGKILL): whatever was not yet autosaved is gone."""
        self._signal(signal.SIGKILL, 10.0)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _signal(self, sig: int, timeout_s: float) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(sig)
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def log(self) -> str:
        """The log's tail, for failure messages."""
        return self.full_log()[-4000:]

    def full_log(self) -> str:
        """The whole log, for asserting that something never happened."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def add_password(password_file: Path, username: str, password: str) -> None:
    """Append a user to a mosquitto password file (mosquitto_passwd -b)."""
    tool = mosquitto_passwd_binary()
    if tool is None:
        pytest.skip("mosquitto_passwd is not installed")
    args = [tool, "-b", str(password_file), username, password]
    if not password_file.exists():
        args.insert(1, "-c")
    subprocess.run(args, check=True, capture_output=True)
    password_file.chmod(0o600)


@pytest.fixture
def mosquitto_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """An anonymous plain-TCP broker with persistence, stopped after the test."""
    broker = MosquittoBroker(tmp_path / "broker")
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


# --- sonopi processes against the broker (shared by the uplink and hub tests) ---------------------

REPO = Path(__file__).resolve().parents[1]


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll until ``predicate()`` is truthy; fail the test naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def device_uplink_command() -> list[str]:
    """``python -m device uplink`` once the device CLI has it, else the package's own entry point."""
    import sys

    cli = REPO / "device" / "cli.py"
    if cli.is_file() and "uplink" in cli.read_text(encoding="utf-8"):
        return [sys.executable, "-m", "device", "uplink"]
    return [sys.executable, "-m", "device.link.uplink"]


def start_process(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log_file = open(log_path, "ab")
    try:
        return subprocess.Popen(args, cwd=REPO, env=env, stdout=log_file, stderr=log_file)
    finally:
        log_file.close()


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


# --- a throwaway PostgreSQL server for the hub's PostgreSQL backend ---------------------------------


def postgres_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return versions[-1].parent if versions else None


class PostgresServer:
    """initdb in a temp dir, a free loopback port, trust auth; as user ``postgres`` when run as root
    (PostgreSQL refuses to run as root). Skips the test when the binaries are absent."""

    def __init__(self) -> None:
        import tempfile

        bindir = postgres_bindir()
        if bindir is None:
            pytest.skip("PostgreSQL server binaries are not installed (.ci/run installs them)")
        self.bindir = bindir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sonopi-pg-"))
        self._as: list[str] = []
        if os.geteuid() == 0:
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
            self.user = "postgres"
        else:
            import getpass

            self.user = getpass.getuser()
        self.data = self.dir / "data"

    def _run(self, *args: str) -> None:
        subprocess.run(self._as + list(args), check=True, capture_output=True, timeout=120)

    def start(self) -> PostgresServer:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", self.user, "-E", "UTF8", "--no-sync")
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w", "-t", "60", "start")
        return self

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    pytest.importorskip("psycopg", reason="psycopg is needed for the PostgreSQL backend (pip install '.[hub]')")
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()
