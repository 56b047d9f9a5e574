#!/usr/bin/env bash
# make flash: turn a stock Raspberry Pi OS Lite (64-bit, Bookworm) image into a ready sonopi device.
#   BASE=raspios.img[.xz] DEVICE_ID=clinic-a-01 SITE=clinic-a (DEVICE=/dev/sdX | OUT=file.img) deploy/flash.sh
# Other inputs (environment): SECRETS (dir with ca.crt+device.crt+device.key and/or mqtt.password;
# default ~/.config/sonopi/secrets/$DEVICE_ID), SSH_PUBKEY, MODEL, MODEL_PUBKEY, WHEELS, ADMIN_USER,
# BROKER, HOSTNAME_, PIN, PYTHON, VENV_DEBS (.debs to use when the image lacks python3.11-venv, instead
# of downloading them). Every input is checked before anything is written; the card is
# written last, from a fully customised and re-checked image.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
die() { echo "flash: error: $*" >&2; exit 1; }
log() { echo "flash: $*" >&2; }
started=$(date +%s)

python=${PYTHON:-python3}
BASE=${BASE:-}; DEVICE=${DEVICE:-}; OUT=${OUT:-}
DEVICE_ID=${DEVICE_ID:-}; SITE=${SITE:-}
SECRETS=${SECRETS:-$HOME/.config/sonopi/secrets/$DEVICE_ID}
SSH_PUBKEY=${SSH_PUBKEY:-$HOME/.ssh/id_ed25519.pub}
KEYS_DIR=${KEYS_DIR:-$HOME/.config/sonopi/keys}
MODEL=${MODEL:-$repo/models/sonopi-lite0}
MODEL_PUBKEY=${MODEL_PUBKEY:-$KEYS_DIR/model-signing.pub}
WHEELS=${WHEELS:-$repo/build/wheels-aarch64-cp311}
ADMIN_USER=${ADMIN_USER:-sonopi-admin}
BROKER=${BROKER:-hub.local:8883}
HOSTNAME_=${HOSTNAME_:-$DEVICE_ID}
PIN=${PIN:-0000}
WORK=${WORK:-$repo/build/flash}

# --- 1. inputs, before anything is written -------------------------------------------------------
[ -n "$BASE" ] || die "BASE= is missing: give a Raspberry Pi OS Lite 64-bit Bookworm .img or .img.xz"
[ -f "$BASE" ] || die "BASE=$BASE: no such file"
[ -n "$DEVICE_ID" ] || die "DEVICE_ID= is missing"
[ -n "$SITE" ] || die "SITE= is missing"
if [ -n "$DEVICE" ] && [ -n "$OUT" ]; then die "give DEVICE= or OUT=, not both"; fi
[ -n "$DEVICE" ] || [ -n "$OUT" ] || die "give DEVICE=/dev/sdX (write a card) or OUT=file.img (write an image)"
for tool in sfdisk mcopy minfo debugfs e2fsck resize2fs dumpe2fs stdbuf xz sha256sum; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install fdisk mtools e2fsprogs xz-utils coreutils)"
done
[ -d "$SECRETS" ] || die "SECRETS=$SECRETS: no such directory (the device's MQTT credentials; never in the repo)"
if [ -n "$(git -C "$SECRETS" ls-files 2>/dev/null | head -1)" ]; then
  die "SECRETS=$SECRETS holds files tracked by git; secrets must never be in the repository"
fi
if ! { [ -f "$SECRETS/ca.crt" ] && [ -f "$SECRETS/device.crt" ] && [ -f "$SECRETS/device.key" ]; } \
   && [ ! -f "$SECRETS/mqtt.password" ]; then
  die "SECRETS=$SECRETS has neither ca.crt+device.crt+device.key nor mqtt.password"
fi
[ -f "$SSH_PUBKEY" ] || die "SSH_PUBKEY=$SSH_PUBKEY: no such file (the developer's public key for SSH)"
ssh-keygen -l -f "$SSH_PUBKEY" >/dev/null 2>&1 || die "SSH_PUBKEY=$SSH_PUBKEY is not an SSH public key"
grep -q "PRIVATE KEY" "$SSH_PUBKEY" && die "SSH_PUBKEY=$SSH_PUBKEY is a private key"
[ -f "$MODEL_PUBKEY" ] || die "MODEL_PUBKEY=$MODEL_PUBKEY: no such file (make keys, or the team's public key)"
[ -d "$MODEL" ] || die "MODEL=$MODEL: no such model bundle directory"
if [ -n "$DEVICE" ]; then
  "$here/write-card.sh" --check-only "$BASE" "$DEVICE"   # refuse a system disk / mounted card now
fi

mkdir -p "$WORK"
stage=$(mktemp -d "$WORK/stage.XXXXXX")   # holds a copy of the secrets: removed on every exit
chmod 0700 "$stage"
trap 'rm -rf "$stage"' EXIT

# --- 2. a working copy of the base image, checked -----------------------------------------------
img="$stage/work.img"
case "$BASE" in
  *.xz) log "checking and decompressing $BASE"
        xz -t "$BASE" 2>/dev/null || die "BASE=$BASE: corrupted xz archive (xz -t failed)"
        xz -dc "$BASE" >"$img" ;;
  *.img) cp --sparse=always "$BASE" "$img" ;;
  *) die "BASE=$BASE: expected .img or .img.xz" ;;
esac
"$python" "$here/image.py" check "$img" >/dev/null || die "BASE=$BASE is not a usable Raspberry Pi OS image (see above)"
# first boot makes the release's venv with the image's own python3: Debian ships venv's ensurepip apart
# (python3.11-venv). Missing -> its .debs (exactly the image's python3.11 version) go on the card for
# first boot's dpkg -i, or the flash stops here, naming the package.
venv_debs="$stage/venv-debs"
"$python" "$here/image.py" python-venv "$img" --out "$venv_debs" --cache "$WORK/apt-arm64" \
  ${VENV_DEBS:+--debs "$VENV_DEBS"} >/dev/null \
  || die "BASE=$BASE: its Python cannot make the release's venv and python3.11-venv could not be provided (see above)"

# --- 3. release, config, payload tree ------------------------------------------------------------
[ -n "$(ls "$WHEELS"/*.whl 2>/dev/null)" ] || PYTHON="$python" "$here/fetch-wheels.sh" "$WHEELS"
rel=$("$python" "$here/build_release.py" --model "$MODEL" --public-key "$MODEL_PUBKEY" --wheels "$WHEELS" \
      --out "${RELEASES:-$repo/build/release}" | tail -1)
id=$(cat "$rel/RELEASE")
root="$stage/root"; boot="$stage/boot"
install -d -m 0755 "$root/opt/sonopi/releases" "$root/opt/sonopi/firstboot" "$root/etc/sonopi" \
  "$root/etc/systemd/system/multi-user.target.wants" "$boot"
cp -a "$rel" "$root/opt/sonopi/releases/$id"
rm -f "$root/opt/sonopi/releases/$id/.complete"
"$python" "$here/render_config.py" --device-id "$DEVICE_ID" --site "$SITE" --secrets "$SECRETS" \
  --broker "$BROKER" --pin "$PIN" --out "$root/etc/sonopi/device.toml" || die "device configuration rejected"
chmod 0640 "$root/etc/sonopi/device.toml"
install -m 0644 "$MODEL_PUBKEY" "$root/etc/sonopi/model-signing.pub"
install -d -m 0700 "$root/etc/sonopi/secrets"
for f in ca.crt device.crt device.key mqtt.password; do
  if [ -f "$SECRETS/$f" ]; then install -m 0600 "$SECRETS/$f" "$root/etc/sonopi/secrets/$f"; fi
done
for unit in "$repo"/systemd/*.service; do install -m 0644 "$unit" "$root/etc/systemd/system/"; done
ln -s /etc/systemd/system/sonopi-firstboot.service "$root/etc/systemd/system/multi-user.target.wants/"
install -m 0755 "$rel/deploy/device/firstboot.sh" "$root/opt/sonopi/firstboot/firstboot.sh"
install -m 0600 "$SSH_PUBKEY" "$root/opt/sonopi/firstboot/authorized_keys"
if [ -n "$(ls "$venv_debs"/*.deb 2>/dev/null)" ]; then
  install -d -m 0755 "$root/opt/sonopi/firstboot/debs"
  install -m 0644 "$venv_debs"/*.deb "$root/opt/sonopi/firstboot/debs/"
  log "the base image cannot make a venv: first boot installs $(cd "$venv_debs" && echo *.deb)"
fi
cat >"$root/opt/sonopi/firstboot/firstboot.env" <<ENV
DEVICE_ID=$DEVICE_ID
SITE=$SITE
HOSTNAME=$HOSTNAME_
RELEASE_ID=$id
ADMIN_USER=$ADMIN_USER
ENV
chmod 0644 "$root/opt/sonopi/firstboot/firstboot.env"
printf 'sonopi first boot: see journalctl -u sonopi-firstboot; runs once, then disables itself.\n' \
  >"$root/opt/sonopi/firstboot/README"
# boot partition: skip Raspberry Pi OS's interactive user wizard (admin user with an unusable
# password: SSH keys only), and a label of what was flashed.
printf '%s:%s\n' "$ADMIN_USER" "$(openssl passwd -6 "$(head -c 32 /dev/urandom | base64)")" >"$boot/userconf.txt"
printf 'device_id=%s\nsite=%s\nrelease=%s\nflashed=%s\n' "$DEVICE_ID" "$SITE" "$id" "$(date -u +%FT%TZ)" \
  >"$boot/sonopi.txt"

# --- 4. customise the image, check it, then write it ---------------------------------------------
log "customising $(basename "$BASE") for $DEVICE_ID (release $id)"
"$python" "$here/image.py" customize "$img" --root-tree "$root" --boot-tree "$boot" \
  || die "customising the image failed; nothing was written"
if [ -n "$OUT" ]; then
  mv -f "$img" "$OUT.tmp"
  mv -f "$OUT.tmp" "$OUT"
  log "image written: $OUT ($(du -h --apparent-size "$OUT" | cut -f1)) in $(( $(date +%s) - started )) s"
else
  "$here/write-card.sh" "$img" "$DEVICE"
  log "card $DEVICE ready for $DEVICE_ID in $(( $(date +%s) - started )) s"
fi
