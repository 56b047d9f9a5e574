"""`make deploy` / `make rollback` over real SSH: a throwaway sshd on a loopback port, the real
Ansible playbooks, a staged device root in a temp dir (systemctl replaced by a stand-in that
records calls). The health check runs a real inference with the deployed code on the tiny model."""

from __future__ import annotations

import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.testsupport import base_python, make_shim_wheels, make_wheel, ssh_keypair
from device.model.signing import generate_keypair, load_private_key, sign_bundle

REPO = Path(__file__).resolve().parents[2]
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"

pytestmark = [
    pytest.mark.skipif(not Path(SSHD).exists(), reason="sshd not installed (openssh-server; .ci/run installs it)"),
    pytest.mark.skipif(not PLAYBOOK.exists(), reason="ansible-core not installed in the venv (dev extra)"),
]

FAKE_SYSTEMCTL = """#!/usr/bin/env bash
# stand-in for systemctl on the staged device: records calls; sonopi-ui "crashes" on the release
# named in crash-release
state={state}
echo "$*" >>"$state/calls"
case "$1" in
  is-active)
    unit="${{@: -1}}"
    current=$(readlink {prefix}/opt/sonopi/current || true)
    if [ "$unit" = sonopi-ui.service ] && [ -f "$state/crash-release" ] \\
       && [ "$current" = "releases/$(cat "$state/crash-release")" ]; then exit 3; fi
    exit 0 ;;
  status) echo "sonopi-ui.service: failed (stand-in)"; exit 3 ;;
  *) exit 0 ;;
esac
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("sshd")
    client_key = ssh_keypair(d / "client")
    host_key = d / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    shutil.copy(f"{client_key}.pub", d / "authorized_keys")
    port = free_port()
    config = d / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {d}/sshd.pid\n"
        f"AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n"
        "LogLevel ERROR\n"
    )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"sshd did not start: {proc.stderr.read()}")
            time.sleep(0.1)
    known_hosts = d / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {(d / 'host_ed25519.pub').read_text()}")
    yield {"port": port, "key": client_key, "known_hosts": known_hosts}
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> dict[str, Path]:
    """A staged device root + two releases' inputs (signed tiny model, stand-in wheels)."""
    t = tmp_path_factory.mktemp("device")
    prefix = t / "root"
    state = prefix / "run/fake-systemd"
    state.mkdir(parents=True)
    (prefix / "etc/sonopi").mkdir(parents=True)
    (prefix / "var/lib/sonopi").mkdir(parents=True)
    (prefix / "opt").mkdir()
    systemctl = prefix / "usr/bin/systemctl"
    systemctl.parent.mkdir(parents=True)
    systemctl.write_text(FAKE_SYSTEMCTL.format(state=state, prefix=prefix))
    systemctl.chmod(0o755)
    private, public = generate_keypair(t / "keys")
    shutil.copy(public, prefix / "etc/sonopi/model-signing.pub")
    (prefix / "etc/sonopi/device.toml").write_text(
        f'[device]\nid = "loopback-01"\nsite = "test"\ndata_dir = "{prefix}/var/lib/sonopi"\n'
        f'[model]\npath = "{prefix}/var/lib/sonopi/models/current"\nthreads = 1\n'
        f'public_key = "{prefix}/etc/sonopi/model-signing.pub"\n'
        "[uplink]\nenabled = false\n"
    )
    model = t / "model"
    shutil.copytree(tiny_bundle_dir, model)
    sign_bundle(model, load_private_key(private))
    wheels1 = make_shim_wheels(t / "wheels1")
    wheels2 = make_shim_wheels(t / "wheels2")
    make_wheel(wheels2, "sonopi_test_extra", "0.2")  # release 2 differs from release 1
    return {"dir": t, "prefix": prefix, "state": state, "systemctl": systemctl, "model": model, "pub": public, "wheels1": wheels1, "wheels2": wheels2}


def run_make(target: str, sshd: dict, device: dict, wheels: Path | None = None, version: str = "") -> subprocess.CompletedProcess[str]:
    extra = (
        f"-e sonopi_prefix={device['prefix']} -e sonopi_systemctl={device['systemctl']} "
        f"-e sonopi_base_python={base_python()} -e sonopi_become=false -e sonopi_health_settle_s=0"
    )
    env = {
        **os.environ,
        "ANSIBLE_HOME": str(device["dir"] / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(device["dir"] / "ansible-local"),
        "ANSIBLE_REMOTE_TEMP": str(device["dir"] / "ansible-remote"),
        "ANSIBLE_PRIVATE_KEY_FILE": str(sshd["key"]),
        "ANSIBLE_SSH_ARGS": f"-o UserKnownHostsFile={sshd['known_hosts']} -o IdentitiesOnly=yes -o ControlMaster=no",
        "ANSIBLE_NOCOLOR": "1",
        "RELEASES": str(device["dir"] / "releases"),
        "PYTHON": sys.executable,
        "RELEASE_VERSION": version,
    }
    args = [
        "make",
        "-s",
        "-C",
        str(REPO),
        target,
        "DEPLOY_STAMP=",
        f"PY={sys.executable}",
        f"PI={getpass.getuser()}@127.0.0.1:{sshd['port']}",
        f"ANSIBLE_ARGS={extra}",
    ]
    if wheels is not None:
        args += [f"MODEL={device['model']}", f"MODEL_PUBKEY={device['pub']}", f"WHEELS={wheels}"]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


def recap(proc: subprocess.CompletedProcess[str]) -> dict[str, int]:
    m = re.search(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m.groups())))


def current(device: dict) -> str:
    return os.readlink(device["prefix"] / "opt/sonopi/current")


def calls(device: dict) -> list[str]:
    path = device["state"] / "calls"
    return path.read_text().splitlines() if path.exists() else []


def test_deploy_idempotent_autorollback_and_rollback(sshd: dict, device: dict) -> None:
    # 1. first deploy: installed, switched, services restarted, healthy (real inference)
    first = run_make("deploy", sshd, device, device["wheels1"], version="0.1.0-test1")
    assert first.returncode == 0, first.stdout + first.stderr
    r1 = current(device)
    assert r1 == "releases/0.1.0-test1"
    release1 = device["prefix"] / "opt/sonopi" / r1
    assert (release1 / ".installed").is_file() and (release1 / "venv/bin/python").exists()
    assert "restart sonopi-ui.service sonopi-uplink.service" in calls(device)
    assert os.readlink(device["prefix"] / "var/lib/sonopi/models/current").startswith("store/tiny-test-model-")
    assert not list((device["prefix"] / "opt/sonopi/incoming").iterdir())
    assert recap(first)["changed"] >= 3

    # 2. same release again: nothing changes, nothing restarts
    n_calls = len([c for c in calls(device) if c.startswith("restart")])
    mtime = (release1 / ".installed").stat().st_mtime
    second = run_make("deploy", sshd, device, device["wheels1"], version="0.1.0-test1")
    assert second.returncode == 0, second.stdout + second.stderr
    assert recap(second)["changed"] == 0, second.stdout
    assert current(device) == r1 and (release1 / ".installed").stat().st_mtime == mtime
    assert len([c for c in calls(device) if c.startswith("restart")]) == n_calls

    # 3. a release whose UI crashes after the restart: health check fails -> automatic rollback
    release2_id = "0.2.0-test"  # pinned: the tree may change under a developer running the tests
    (device["state"] / "crash-release").write_text(release2_id)
    bad = run_make("deploy", sshd, device, device["wheels2"], version=release2_id)
    assert bad.returncode != 0
    out = bad.stdout + bad.stderr
    assert "health check FAILED" in out and "rolled back to" in out and "sonopi-ui.service is not active" in out
    assert current(device) == r1
    assert os.readlink(device["prefix"] / "opt/sonopi/previous") == f"releases/{release2_id}"

    # 4. the same release without the crash deploys (already installed: only switch + restart)
    (device["state"] / "crash-release").unlink()
    good = run_make("deploy", sshd, device, device["wheels2"], version=release2_id)
    assert good.returncode == 0, good.stdout + good.stderr
    assert current(device) == f"releases/{release2_id}"

    # 5. explicit rollback
    back = run_make("rollback", sshd, device)
    assert back.returncode == 0, back.stdout + back.stderr
    assert current(device) == r1
    assert os.readlink(device["prefix"] / "opt/sonopi/previous") == f"releases/{release2_id}"


def test_tampered_model_in_release_is_refused(sshd: dict, device: dict, tmp_path: Path) -> None:
    """A release whose model does not verify on the device is not activated; the running one stays."""
    before = current(device) if (device["prefix"] / "opt/sonopi/current").is_symlink() else None
    rel_dir = device["dir"] / "releases"
    build = subprocess.run(
        [
            sys.executable,
            str(REPO / "deploy/build_release.py"),
            "--model",
            str(device["model"]),
            "--public-key",
            str(device["pub"]),
            "--wheels",
            str(device["wheels1"]),
            "--out",
            str(rel_dir),
            "--version",
            "9.9.9-tampered",
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    tampered = rel_dir / "9.9.9-tampered"
    model = tampered / "model/model.tflite"
    data = bytearray(model.read_bytes())
    data[100] ^= 0xFF
    model.write_bytes(bytes(data))
    (rel_dir / "sonopi-9.9.9-tampered.tar").unlink()
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
            "from deploy.build_release import _write_tar; _write_tar(Path(sys.argv[2]), Path(sys.argv[3]))",
            str(REPO),
            str(tampered),
            str(rel_dir / "sonopi-9.9.9-tampered.tar"),
        ],
        check=True,
    )
    proc = subprocess.run(
        [
            str(PLAYBOOK),
            "-i",
            "127.0.0.1,",
            "-e",
            f"ansible_user={getpass.getuser()}",
            "-e",
            f"ansible_port={sshd['port']}",
            "-e",
            "release_id=9.9.9-tampered",
            "-e",
            f"release_tar={rel_dir / 'sonopi-9.9.9-tampered.tar'}",
            "-e",
            f"sonopi_prefix={device['prefix']}",
            "-e",
            f"sonopi_systemctl={device['systemctl']}",
            "-e",
            f"sonopi_base_python={base_python()}",
            "-e",
            "sonopi_become=false",
            "-e",
            "sonopi_health_settle_s=0",
            str(REPO / "deploy/ansible/deploy.yml"),
        ],
        env={
            **os.environ,
            "ANSIBLE_CONFIG": str(REPO / "deploy/ansible/ansible.cfg"),
            "ANSIBLE_HOME": str(device["dir"] / "ansible-home"),
            "ANSIBLE_PRIVATE_KEY_FILE": str(sshd["key"]),
            "ANSIBLE_SSH_ARGS": f"-o UserKnownHostsFile={sshd['known_hosts']} -o IdentitiesOnly=yes",
            "ANSIBLE_REMOTE_TEMP": str(device["dir"] / "ansible-remote"),
            "ANSIBLE_NOCOLOR": "1",
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "model.tflite was modified after signing" in proc.stdout + proc.stderr
    if before is not None:
        assert current(device) == before
