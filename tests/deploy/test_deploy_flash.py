"""`make flash ... OUT=` on a small image with the Raspberry Pi OS layout, read back with the same
tools (debugfs, mtools); first boot run against the flashed root (staged, not this machine);
bad inputs refused before anything is written; the card writer's safety checks and read-back."""

from __future__ import annotations

import json
import lzma
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.testsupport import (
    base_python,
    make_base_image,
    make_shim_wheels,
    missing_tools,
    secrets_dir,
    ssh_keypair,
)
from device.model.signing import generate_keypair, load_private_key, load_public_key, sign_bundle, verify_bundle
from tests.device.model.test_signing import make_bundle

REPO = Path(__file__).resolve().parents[2]

_missing = missing_tools(("ssh-keygen", "openssl", "make"))
pytestmark = pytest.mark.skipif(bool(_missing), reason=f"tools missing (installed by .ci/run): {', '.join(_missing)}")


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    t = tmp_path_factory.mktemp("flash")
    private, public = generate_keypair(t / "keys")
    model = make_bundle(t / "model")
    sign_bundle(model, load_private_key(private))
    return {
        "dir": t,
        "base": make_base_image(t / "base.img"),
        "model": model,
        "pub": public,
        "wheels": make_shim_wheels(t / "wheels"),
        "ssh": ssh_keypair(t / "ssh"),
        "secrets": secrets_dir(t / "secrets"),
    }


def flash_env(kit: dict[str, Path], **overrides: str) -> dict[str, str]:
    env = {
        **os.environ,
        "BASE": str(kit["base"]),
        "DEVICE_ID": "clinic-a-01",
        "SITE": "clinic-a",
        "SECRETS": str(kit["secrets"]),
        "SSH_PUBKEY": f"{kit['ssh']}.pub",
        "MODEL": str(kit["model"]),
        "MODEL_PUBKEY": str(kit["pub"]),
        "WHEELS": str(kit["wheels"]),
        "WORK": str(kit["dir"] / "work"),
        "RELEASES": str(kit["dir"] / "releases"),
        "PYTHON": sys.executable,
    }
    env.update(overrides)
    return env


def make_flash(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    args = [f"{k}={env[k]}" for k in ("BASE", "DEVICE_ID", "SITE", "OUT", "DEVICE") if k in env]
    return subprocess.run(
        ["make", "-s", "-C", str(REPO), "flash", "DEPLOY_STAMP=", f"PY={env['PYTHON']}", *args], env=env, capture_output=True, text=True, timeout=300
    )


def offsets(image: Path) -> dict[str, int]:
    out = subprocess.run(["sfdisk", "--json", str(image)], capture_output=True, text=True, check=True).stdout
    parts = json.loads(out)["partitiontable"]["partitions"]
    return {"boot": parts[0]["start"] * 512, "root": parts[1]["start"] * 512, "root_size": parts[1]["size"] * 512}


def dbg(image: Path, off: int, command: str) -> str:
    return subprocess.run(["debugfs", "-R", command, f"{image}?offset={off}"], capture_output=True, text=True, check=True).stdout


def inode(image: Path, off: int, path: str) -> dict[str, int | str]:
    text = dbg(image, off, f'stat "{path}"')
    m = re.search(r"Type: (\S+)\s+Mode:\s+(\d+)", text)
    u = re.search(r"User:\s+(\d+)\s+Group:\s+(\d+)", text)
    assert m and u, f"{path} not in image: {text}"
    return {"type": m.group(1), "mode": int(m.group(2), 8), "uid": int(u.group(1)), "gid": int(u.group(2))}


@pytest.fixture(scope="module")
def flashed(kit: dict[str, Path]) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = kit["dir"] / "out.img"
    proc = make_flash(flash_env(kit, OUT=str(out)))
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_flash_writes_everything_with_owners_and_modes(flashed, kit: dict[str, Path], tmp_path: Path) -> None:
    out, proc = flashed
    assert not list((kit["dir"] / "work").glob("stage.*")), "staging copy of the secrets must be removed"
    off = offsets(out)
    assert off["root_size"] > 48 << 20, "root partition should have been grown for the payload"
    assert subprocess.run(["e2fsck", "-fn", f"{out}?offset={off['root']}"], capture_output=True).returncode == 0

    for name, content in (("device.key", "KEY-SECRET\n"), ("mqtt.password", "hunter2\n"), ("ca.crt", "CA\n")):
        meta = inode(out, off["root"], f"/etc/sonopi/secrets/{name}")
        assert (meta["mode"], meta["uid"]) == (0o600, 0), name
        assert dbg(out, off["root"], f"cat /etc/sonopi/secrets/{name}") == content
    assert inode(out, off["root"], "/etc/sonopi/secrets")["mode"] == 0o700
    assert inode(out, off["root"], "/etc/sonopi/device.toml")["mode"] == 0o640
    assert inode(out, off["root"], "/etc/sonopi/model-signing.pub")["mode"] == 0o644
    assert dbg(out, off["root"], "cat /etc/sonopi/model-signing.pub") == kit["pub"].read_text()
    for unit in ("sonopi-ui", "sonopi-uplink", "sonopi-firstboot"):
        assert dbg(out, off["root"], f"cat /etc/systemd/system/{unit}.service") == (REPO / f"systemd/{unit}.service").read_text()
        assert inode(out, off["root"], f"/etc/systemd/system/{unit}.service")["mode"] == 0o644
    link = inode(out, off["root"], "/etc/systemd/system/multi-user.target.wants/sonopi-firstboot.service")
    assert link["type"] == "symlink"
    assert inode(out, off["root"], "/opt/sonopi/firstboot/firstboot.sh")["mode"] == 0o755
    assert dbg(out, off["root"], "cat /opt/sonopi/firstboot/authorized_keys") == Path(f"{kit['ssh']}.pub").read_text()
    env = dict(line.split("=", 1) for line in dbg(out, off["root"], "cat /opt/sonopi/firstboot/firstboot.env").splitlines())
    assert env["DEVICE_ID"] == "clinic-a-01" and env["HOSTNAME"] == "clinic-a-01"
    rel = f"/opt/sonopi/releases/{env['RELEASE_ID']}"
    assert dbg(out, off["root"], f"cat {rel}/RELEASE").strip() == env["RELEASE_ID"]
    assert "sonopi_test_shim-0.1-py3-none-any.whl" in dbg(out, off["root"], f"ls {rel}/wheels")
    assert existing_files(out, off["root"], rel) >= {"test-frame.png", "model", "deploy", "systemd"}

    # the config is valid per the device's own validator
    config = tmp_path / "device.toml"
    config.write_text(dbg(out, off["root"], "cat /etc/sonopi/device.toml"))
    check = subprocess.run([sys.executable, "-m", "device", "config", "check", str(config)], capture_output=True, text=True, cwd=REPO)
    assert check.returncode == 0, check.stderr
    text = config.read_text()
    assert 'id = "clinic-a-01"' in text and 'public_key = "/etc/sonopi/model-signing.pub"' in text
    assert 'key_file = "/etc/sonopi/secrets/device.key"' in text

    # the model bundle on the image still verifies against the key
    dump = tmp_path / "model"
    dump.mkdir()
    dbg(out, off["root"], f"rdump {rel}/model {dump}")
    assert verify_bundle(dump / "model", load_public_key(kit["pub"])).manifest.name == "sonopi-lite0"

    # boot partition: the user wizard is skipped, a label says what was flashed
    fat = f"{out}@@{off['boot']}"
    userconf = subprocess.run(["mtype", "-i", fat, "::/userconf.txt"], capture_output=True, text=True, check=True).stdout
    assert re.fullmatch(r"sonopi-admin:\$6\$\S+\n", userconf)
    label = subprocess.run(["mtype", "-i", fat, "::/sonopi.txt"], capture_output=True, text=True, check=True).stdout
    assert "device_id=clinic-a-01" in label
    assert "cmdline.txt" in subprocess.run(["mdir", "-b", "-i", fat, "::/"], capture_output=True, text=True).stdout


def existing_files(image: Path, off: int, path: str) -> set[str]:
    return set(dbg(image, off, f"ls -p {path}").replace("/", " ").split()) if path else set()


def test_flash_is_repeatable(flashed, kit: dict[str, Path]) -> None:
    out, first = flashed
    again = kit["dir"] / "again.img"
    proc = make_flash(flash_env(kit, OUT=str(again)))
    assert proc.returncode == 0, proc.stderr
    ids = [re.search(r"release (\S+)\)", p.stderr).group(1) for p in (first, proc)]
    if ids[0] != ids[1]:
        pytest.skip("the sources changed between the two runs (someone is editing the tree)")
    assert "already built" in proc.stderr  # the same release is reused, byte for byte
    off = offsets(again)
    assert dbg(again, off["root"], "cat /etc/sonopi/device.toml") == dbg(out, offsets(out)["root"], "cat /etc/sonopi/device.toml")


@pytest.mark.skipif(os.geteuid() != 0, reason="first boot creates users in the staged root: needs root (CI is root)")
def test_first_boot_against_the_flashed_root(flashed, tmp_path: Path) -> None:
    out, _ = flashed
    staged = tmp_path / "root"
    staged.mkdir()
    dbg(out, offsets(out)["root"], f"rdump / {staged}")
    env = {**os.environ, "SONOPI_PREFIX": str(staged), "SONOPI_BASE_PYTHON": base_python()}
    proc = subprocess.run([str(staged / "opt/sonopi/firstboot/firstboot.sh")], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    passwd = (staged / "etc/passwd").read_text()
    sonopi = next(line.split(":") for line in passwd.splitlines() if line.startswith("sonopi:"))
    uid, gid = int(sonopi[2]), int(sonopi[3])
    assert uid < 1000 and sonopi[6] == "/usr/sbin/nologin"
    for group in ("video", "render", "input"):
        assert "sonopi" in next(line for line in (staged / "etc/group").read_text().splitlines() if line.startswith(group + ":"))
    key = (staged / "etc/sonopi/secrets/device.key").stat()
    assert (key.st_uid, key.st_mode & 0o777) == (uid, 0o600)
    conf = (staged / "etc/sonopi/device.toml").stat()
    assert (conf.st_uid, conf.st_gid, conf.st_mode & 0o777) == (0, gid, 0o640)
    wants = staged / "etc/systemd/system/multi-user.target.wants"
    assert sorted(p.name for p in wants.iterdir()) == ["sonopi-ui.service", "sonopi-uplink.service", "ssh.service"]
    assert not (staged / "opt/sonopi/firstboot/firstboot.sh").exists()  # disabled itself
    assert (staged / "etc/hostname").read_text() == "clinic-a-01\n"
    assert "127.0.1.1\tclinic-a-01" in (staged / "etc/hosts").read_text()
    assert "PasswordAuthentication no" in (staged / "etc/ssh/sshd_config.d/10-sonopi.conf").read_text()
    auth = staged / "home/sonopi-admin/.ssh/authorized_keys"
    assert auth.stat().st_mode & 0o777 == 0o600 and auth.read_text().startswith("ssh-ed25519 ")
    current = os.readlink(staged / "opt/sonopi/current")
    assert (staged / "opt/sonopi" / current / ".installed").is_file()
    assert os.readlink(staged / "var/lib/sonopi/models/current").startswith("store/sonopi-lite0-1.0.0-")
    # the installed venv runs the release's code
    probe = subprocess.run(
        [str(staged / "opt/sonopi/current/venv/bin/python"), "-c", "import device.model.signing, sys; print(sys.prefix)"],
        capture_output=True,
        text=True,
    )
    assert probe.returncode == 0 and "venv" in probe.stdout, probe.stderr


# --- bad input: clear error, nothing written -----------------------------------------------------


def _refused(kit: dict[str, Path], tmp_path: Path, match: str, **overrides: str) -> None:
    out = tmp_path / "never.img"
    env = flash_env(kit, OUT=str(out), **overrides)
    if overrides.get("BASE") == "":
        env.pop("BASE")
    proc = make_flash(env)
    assert proc.returncode != 0
    assert re.search(match, proc.stderr), proc.stderr
    assert not out.exists() and not Path(str(out) + ".tmp").exists()


def test_missing_base(kit: dict[str, Path], tmp_path: Path) -> None:
    _refused(kit, tmp_path, r"BASE= is missing", BASE="")
    _refused(kit, tmp_path, r"BASE=.*no such file", BASE=str(tmp_path / "nope.img"))


def test_corrupted_images(kit: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.img"
    shutil.copyfile(kit["base"], broken)
    root = offsets(broken)["root"]
    with open(broken, "r+b") as fh:  # wipe the ext4 superblock and group descriptors
        fh.seek(root + 1024)
        fh.write(b"\xff" * 8192)
    _refused(kit, tmp_path, r"root partition is not a clean ext4", BASE=str(broken))
    junk = tmp_path / "junk.img"
    junk.write_bytes(os.urandom(1 << 20))
    _refused(kit, tmp_path, r"no readable partition table|not a Raspberry Pi OS image", BASE=str(junk))
    xz = tmp_path / "base.img.xz"
    xz.write_bytes(lzma.compress(kit["base"].read_bytes()[: 8 << 20], preset=0)[:-64])  # truncated download
    _refused(kit, tmp_path, r"corrupted xz archive", BASE=str(xz))


def test_missing_secrets_and_keys(kit: dict[str, Path], tmp_path: Path) -> None:
    _refused(kit, tmp_path, r"SECRETS=.*no such directory", SECRETS=str(tmp_path / "none"))
    empty = tmp_path / "empty-secrets"
    empty.mkdir()
    _refused(kit, tmp_path, r"neither ca.crt\+device.crt\+device.key nor mqtt.password", SECRETS=str(empty))
    _refused(kit, tmp_path, r"tracked by git", SECRETS=str(REPO / "deploy"))
    _refused(kit, tmp_path, r"SSH_PUBKEY=.*not an SSH public key", SSH_PUBKEY=str(kit["pub"]))
    _refused(kit, tmp_path, r"device.id", DEVICE_ID="bad/id")


def test_unsigned_model_refused(kit: dict[str, Path], tmp_path: Path) -> None:
    unsigned = make_bundle(tmp_path / "unsigned")
    _refused(kit, tmp_path, r"unsigned", MODEL=str(unsigned))


def _system_disk() -> str | None:
    src = subprocess.run(["findmnt", "-no", "SOURCE", "/"], capture_output=True, text=True).stdout.strip()
    return src if src.startswith("/dev/") and Path(src).is_block_device() else None


@pytest.mark.skipif(_system_disk() is None, reason="/ is not on a block device here (container overlay)")
def test_refuses_mounted_system_disk(kit: dict[str, Path], tmp_path: Path) -> None:
    disk = _system_disk()
    env = flash_env(kit, DEVICE=disk)
    proc = make_flash(env)
    assert proc.returncode != 0
    assert re.search(r"is mounted|holds this workstation|partition or not a disk", proc.stderr), proc.stderr


def test_card_writer_checks_and_read_back(tmp_path: Path) -> None:
    image = tmp_path / "x.img"
    image.write_bytes(os.urandom(3 << 20))
    writer = str(REPO / "deploy/write-card.sh")
    proc = subprocess.run([writer, "--check-only", str(image), str(tmp_path / "missing")], capture_output=True, text=True)
    assert proc.returncode != 0 and "does not exist" in proc.stderr
    target = tmp_path / "card.img"
    target.write_bytes(b"\0" * (4 << 20))
    proc = subprocess.run([writer, str(image), str(target)], capture_output=True, text=True)
    assert proc.returncode != 0 and "not a block device" in proc.stderr
    assert target.read_bytes() == b"\0" * (4 << 20)  # nothing written
    env = {**os.environ, "SONOPI_ALLOW_FILE_TARGET": "1"}
    proc = subprocess.run([writer, str(image), str(target)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "copied" in proc.stderr and "verified: sha256" in proc.stderr  # dd progress + read-back
    assert target.read_bytes()[: 3 << 20] == image.read_bytes()
