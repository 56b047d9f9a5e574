#!/usr/bin/env bash
# sonopi first boot, run once by sonopi-firstboot.service as root, offline, from what `make flash`
# put on the card (/opt/sonopi/firstboot/firstboot.env + the release under /opt/sonopi/releases).
# Every step is idempotent, so a power cut half-way is fixed by the next boot; the unit disables
# itself only at the very end. SONOPI_PREFIX (tests) = a staged root to act on instead of /;
# SONOPI_DPKG (tests) = a stand-in for dpkg.
set -euo pipefail
log() { echo "sonopi-firstboot: $*" >&2; }
prefix=${SONOPI_PREFIX:-}
fb="$prefix/opt/sonopi/firstboot"
# shellcheck source=/dev/null
. "$fb/firstboot.env"   # DEVICE_ID SITE HOSTNAME RELEASE_ID ADMIN_USER
: "${DEVICE_ID:?} ${HOSTNAME:?} ${RELEASE_ID:?} ${ADMIN_USER:?}"
rootarg=()
[ -n "$prefix" ] && rootarg=(--root "$prefix")
has_user() { grep -q "^$1:" "$prefix/etc/passwd"; }
has_group() { grep -q "^$1:" "$prefix/etc/group"; }

log "provisioning $DEVICE_ID (site ${SITE:-?}), release $RELEASE_ID"

# 1. service user: no login, no home of its own, device groups for display/input/capture
groups=()
for g in video render input; do has_group "$g" && groups+=("$g"); done
if ! has_user sonopi; then
  useradd "${rootarg[@]}" --system --user-group --home-dir /var/lib/sonopi --no-create-home \
    --shell /usr/sbin/nologin ${groups:+--groups "$(IFS=,; echo "${groups[*]}")"} sonopi
  log "created system user sonopi (groups: ${groups[*]:-none})"
fi

# 2. data directory and the files that need the user: config 0640 root:sonopi, secrets 0600 sonopi
install -d -m 0750 -o sonopi -g sonopi "$prefix/var/lib/sonopi" 2>/dev/null \
  || install -d -m 0750 "$prefix/var/lib/sonopi"
chown_in_root() {  # user:group lookups must use the target root's /etc/passwd, not the host's
  local owner=$1 group=$2; shift 2
  local uid gid
  uid=$(awk -F: -v u="$owner" '$1==u{print $3}' "$prefix/etc/passwd")
  gid=$(awk -F: -v g="$group" '$1==g{print $3}' "$prefix/etc/group")
  chown "$uid:$gid" "$@"
}
chown_in_root sonopi sonopi "$prefix/var/lib/sonopi"
chown_in_root root sonopi "$prefix/etc/sonopi/device.toml" "$prefix/etc/sonopi/secrets"
chmod 0640 "$prefix/etc/sonopi/device.toml"
chmod 0750 "$prefix/etc/sonopi/secrets"
for f in "$prefix"/etc/sonopi/secrets/*; do
  [ -f "$f" ] || continue
  chown_in_root sonopi sonopi "$f"
  chmod 0600 "$f"
done

# 3. the release: venv from the bundled wheels (no network), then make it current. If the base image's
# Python could not make a venv, make flash brought Debian's python3.11-venv (+ what it needs) as .debs.
debs=()
for deb in "$fb"/debs/*.deb; do [ -f "$deb" ] && debs+=("$deb"); done
if [ ${#debs[@]} -gt 0 ] && [ ! -f "$fb/debs/.installed" ]; then
  log "installing ${#debs[@]} package(s) for python3 -m venv: ${debs[*]##*/}"
  ${SONOPI_DPKG:-dpkg} ${prefix:+--root="$prefix"} -i "${debs[@]}"
  touch "$fb/debs/.installed"
fi
"$prefix/opt/sonopi/releases/$RELEASE_ID/deploy/device/install-release.sh" "$prefix/opt/sonopi/releases/$RELEASE_ID"
"$prefix/opt/sonopi/releases/$RELEASE_ID/deploy/device/activate-release.sh" "$RELEASE_ID" >/dev/null

# 4. hostname
echo "$HOSTNAME" >"$prefix/etc/hostname"
if grep -q '^127\.0\.1\.1' "$prefix/etc/hosts" 2>/dev/null; then
  sed -i "s/^127\.0\.1\.1.*/127.0.1.1\t$HOSTNAME/" "$prefix/etc/hosts"
else
  printf '127.0.1.1\t%s\n' "$HOSTNAME" >>"$prefix/etc/hosts"
fi
[ -z "$prefix" ] && hostname "$HOSTNAME"

# 5. SSH: the developer's public key only, no passwords, no root
if ! has_user "$ADMIN_USER"; then
  useradd "${rootarg[@]}" --create-home --user-group --shell /bin/bash ${groups:+--groups "$(IFS=,; echo "${groups[*]}")"} "$ADMIN_USER"
  log "created admin user $ADMIN_USER"
fi
has_group sudo && usermod "${rootarg[@]}" -aG sudo "$ADMIN_USER"
home=$(awk -F: -v u="$ADMIN_USER" '$1==u{print $6}' "$prefix/etc/passwd")
install -d -m 0700 "$prefix$home/.ssh"
install -m 0600 "$fb/authorized_keys" "$prefix$home/.ssh/authorized_keys"
chown "$(awk -F: -v u="$ADMIN_USER" '$1==u{print $3":"$4}' "$prefix/etc/passwd")" \
  "$prefix$home/.ssh" "$prefix$home/.ssh/authorized_keys"
install -d -m 0755 "$prefix/etc/ssh/sshd_config.d"
cat >"$prefix/etc/ssh/sshd_config.d/10-sonopi.conf" <<CONF
# written by sonopi first boot: key-only login for the admin user
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AuthenticationMethods publickey
AllowUsers $ADMIN_USER
CONF
install -d -m 0750 "$prefix/etc/sudoers.d"
printf '%s ALL=(ALL) NOPASSWD: ALL\n' "$ADMIN_USER" >"$prefix/etc/sudoers.d/010_sonopi-admin"
chmod 0440 "$prefix/etc/sudoers.d/010_sonopi-admin"

# 6. units on, first boot off (last: an interrupted run is repeated at the next boot)
systemctl "${rootarg[@]}" enable sonopi-ui.service sonopi-uplink.service ssh.service
systemctl "${rootarg[@]}" disable sonopi-firstboot.service
mv -f "$fb/firstboot.sh" "$fb/firstboot.sh.done"
sync
if [ -z "$prefix" ]; then
  systemctl --no-block start ssh.service sonopi-ui.service sonopi-uplink.service
fi
log "done: $DEVICE_ID is provisioned; first boot disabled"
