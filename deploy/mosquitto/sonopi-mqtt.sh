#!/usr/bin/env bash
# Credentials for the sonopi broker. Secrets are never committed: everything is written under --dir
# (default /etc/mosquitto/sonopi) and --out, with umask 077 (files 0600).
#
#   sonopi-mqtt.sh init [--dir DIR] [--host NAME]...     CA, server certificate, hub account + certificate, ACL
#   sonopi-mqtt.sh add-device SITE DEVICE_ID [--dir DIR] [--out DIR]
#                                                       device account (random password), ACL block, client
#                                                       certificate; --out gets the files to copy to the device
#   sonopi-mqtt.sh add-hub NAME [--dir DIR]             a further hub account (a second `hub serve`): certificate
#                                                       with CN NAME and the hub's ACL block
#   sonopi-mqtt.sh revoke-device SITE DEVICE_ID [--dir DIR]
#                                                       removes the device's ACL block and passwd entry: its
#                                                       certificate still connects, but may read and write nothing
# The broker (sonopi.conf) takes each client's identity from its certificate: CN = username = client id.
# After add-device, add-hub or revoke-device, reload the broker: systemctl reload mosquitto (or kill -HUP its pid).
set -euo pipefail
umask 077

die() { echo "sonopi-mqtt: $*" >&2; exit 1; }
name_ok() { [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ ]] || die "'$1' is not a valid site/device name"; }

cmd="${1:-}"; shift || true
dir=/etc/mosquitto/sonopi; out=""; hosts=(); args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --host) hosts+=("$2"); shift 2 ;;
    -*) die "unknown option $1" ;;
    *) args+=("$1"); shift ;;
  esac
done
command -v openssl >/dev/null || die "openssl is required"
passwd_tool=$(command -v mosquitto_passwd || true)
[ -n "$passwd_tool" ] || die "mosquitto_passwd is required (apt-get install mosquitto)"

issue_cert() {  # issue_cert NAME CN [SAN]
  local name="$1" cn="$2" san="${3:-}"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$name.key" 2>/dev/null
  openssl req -new -key "$dir/$name.key" -subj "/CN=${cn//\//\\/}" -out "$dir/$name.csr" 2>/dev/null
  local ext="$dir/$name.ext"
  if [ -n "$san" ]; then
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san" > "$ext"
  else
    printf 'extendedKeyUsage=clientAuth\n' > "$ext"
  fi
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 825 -sha256 -extfile "$ext" -out "$dir/$name.crt" 2>/dev/null
  rm -f "$dir/$name.csr" "$ext"
  chmod 600 "$dir/$name.key" "$dir/$name.crt"
}

# The broker (user mosquitto on Debian) must read its files; nobody else may.
for_broker() { if [ "$(id -u)" = 0 ] && id mosquitto >/dev/null 2>&1; then chown mosquitto: "$@"; fi; }

new_password() { openssl rand -base64 24 | tr -d '/+=\n' | cut -c1-24; }

case "$cmd" in
  init)
    mkdir -p "$dir"; chmod 700 "$dir"
    [ -e "$dir/ca.key" ] && die "$dir/ca.key exists: already initialised"
    [ ${#hosts[@]} -gt 0 ] || hosts=(localhost)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj "/CN=sonopi MQTT CA" \
      -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
    san=""
    for h in "${hosts[@]}"; do
      if [[ "$h" =~ ^[0-9.]+$ ]]; then san+="IP:$h,"; else san+="DNS:$h,"; fi
    done
    issue_cert server "${hosts[0]}" "${san%,}"
    issue_cert hub sonopi-hub
    pw=$(new_password)
    "$passwd_tool" -c -b "$dir/passwd" sonopi-hub "$pw"
    printf '%s\n' "$pw" > "$dir/hub.password"
    cp "$(dirname "$0")/acl.base" "$dir/acl"
    chmod 600 "$dir"/*
    for_broker "$dir" "$dir/ca.crt" "$dir/server.crt" "$dir/server.key" "$dir/passwd" "$dir/acl"
    echo "initialised $dir (CA, server certificate for ${hosts[*]}, hub account sonopi-hub)"
    ;;
  add-device)
    [ ${#args[@]} -eq 2 ] || die "usage: add-device SITE DEVICE_ID"
    site="${args[0]}"; device="${args[1]}"; name_ok "$site"; name_ok "$device"
    [ -e "$dir/ca.key" ] || die "$dir is not initialised (run init first)"
    user="$site/$device"
    grep -qxF "user $user" "$dir/acl" && die "device $user already exists"
    pw=$(new_password)
    "$passwd_tool" -b "$dir/passwd" "$user" "$pw"
    cat >> "$dir/acl" <<ACL

# device $user: publishes only under its own topics, reads only its own acks
user $user
topic write sonopi/v1/$site/$device/result
topic write sonopi/v1/$site/$device/status
topic write sonopi/v1/$site/$device/heartbeat
topic write sonopi/v1/$site/$device/correction
topic read sonopi/v1/$site/$device/ack
ACL
    issue_cert "device-$site-$device" "$user"
    out="${out:-$dir/devices/$site-$device}"
    mkdir -p "$out"; chmod 700 "$out"
    cp "$dir/ca.crt" "$out/ca.crt"
    mv "$dir/device-$site-$device.crt" "$out/device.crt"
    mv "$dir/device-$site-$device.key" "$out/device.key"
    printf '%s\n' "$pw" > "$out/mqtt.password"
    cat > "$out/uplink.toml" <<TOML
# [uplink] settings for $user (copy the other files to /etc/sonopi/). The broker takes the identity from
# device.crt (CN $user); username also names the client id the uplink uses (the broker binds it to the CN).
tls = true
ca_file = "/etc/sonopi/ca.crt"
cert_file = "/etc/sonopi/device.crt"
key_file = "/etc/sonopi/device.key"
username = "$user"
password_file = "/etc/sonopi/mqtt.password"
TOML
    chmod 600 "$out"/* "$dir/passwd" "$dir/acl"
    for_broker "$dir/passwd" "$dir/acl"
    echo "device $user: credentials in $out; reload the broker to apply"
    ;;
  add-hub)
    [ ${#args[@]} -eq 1 ] || die "usage: add-hub NAME"
    name="${args[0]}"; name_ok "$name"
    [ -e "$dir/ca.key" ] || die "$dir is not initialised (run init first)"
    grep -qxF "user $name" "$dir/acl" && die "account $name already exists"
    [ -e "$dir/$name.crt" ] && die "$dir/$name.crt exists"
    { echo; echo "# hub $name: the same rights as sonopi-hub"; sed -n '/^user sonopi-hub$/,/^$/p' "$(dirname "$0")/acl.base" \
        | sed "s/^user sonopi-hub$/user $name/"; } >> "$dir/acl"
    issue_cert "$name" "$name"
    chmod 600 "$dir/acl"
    for_broker "$dir/acl"
    echo "hub account $name: $dir/$name.crt and $dir/$name.key (its [mqtt] username and client_id: $name); reload the broker"
    ;;
  revoke-device)
    [ ${#args[@]} -eq 2 ] || die "usage: revoke-device SITE DEVICE_ID"
    site="${args[0]}"; device="${args[1]}"; name_ok "$site"; name_ok "$device"
    user="$site/$device"
    grep -qxF "user $user" "$dir/acl" || die "device $user is not in $dir/acl"
    awk -v u="user $user" -v c="# device $user:" '
      index($0, c) == 1 { next }
      $0 == u { skip = 1; next }
      skip && /^topic / { next }
      { skip = 0; print }' "$dir/acl" > "$dir/acl.new"
    mv "$dir/acl.new" "$dir/acl"
    "$passwd_tool" -D "$dir/passwd" "$user" 2>/dev/null || true
    chmod 600 "$dir/acl" "$dir/passwd"
    for_broker "$dir/acl" "$dir/passwd"
    echo "device $user revoked (no topic access); reload the broker to apply"
    ;;
  *) die "usage: sonopi-mqtt.sh init|add-device|add-hub|revoke-device ... (see the header of this script)" ;;
esac
