#!/usr/bin/env bash
# Write an image to an SD card with progress, then verify by reading it back:
#   deploy/write-card.sh [--check-only] IMAGE DEVICE
# Refuses (before writing a byte) a target that is not a whole block device, is mounted or used as
# swap, holds the workstation's own file systems, is not removable/USB/SD (FORCE=1 overrides only
# that last check), or is smaller than the image.
set -euo pipefail
die() { echo "write-card: error: $*" >&2; exit 1; }
log() { echo "write-card: $*" >&2; }
check_only=0
[ "${1:-}" = "--check-only" ] && { check_only=1; shift; }
image=${1:?usage: write-card.sh [--check-only] IMAGE DEVICE}
device=${2:?usage: write-card.sh [--check-only] IMAGE DEVICE}

[ -f "$image" ] || die "$image: no such image"
[ -e "$device" ] || die "DEVICE=$device does not exist"
dev=$(readlink -f "$device")
# Regular-file targets are for the tests only (they exercise the write + read-back path).
if [ -f "$dev" ] && [ "${SONOPI_ALLOW_FILE_TARGET:-0}" = 1 ]; then
  kind=file
else
  [ -b "$dev" ] || die "DEVICE=$device is not a block device"
  kind=block
  [ "$(lsblk -dno TYPE "$dev")" = disk ] || die "DEVICE=$device is a partition or not a disk; give the whole card (e.g. /dev/sdb)"
  members=$(lsblk -nrpo NAME "$dev")   # the disk and its partitions
  mounted=$(lsblk -nrpo NAME,MOUNTPOINTS "$dev" | awk 'NF>1{print $1" on "$2}')
  [ -z "$mounted" ] || die "DEVICE=$device is mounted ($(echo "$mounted" | paste -sd, -)); unmount it first"
  while read -r src _; do
    for m in $members; do [ "$(readlink -f "$src" 2>/dev/null)" = "$m" ] && die "DEVICE=$device is mounted ($src)"; done
  done </proc/self/mounts
  for m in $members; do grep -q "^$m " /proc/swaps && die "DEVICE=$device is in use as swap ($m)"; done
  for mp in / /boot /boot/efi /home /usr /var; do
    src=$(findmnt -no SOURCE "$mp" 2>/dev/null || true)
    [ -n "$src" ] && [ -b "$src" ] || continue
    for disk in $(lsblk -nrpso NAME,TYPE "$src" | awk '$2=="disk"{print $1}'); do
      [ "$disk" = "$dev" ] && die "DEVICE=$device holds this workstation's $mp; refusing to overwrite it"
    done
  done
  read -r rm tran < <(lsblk -dno RM,TRAN "$dev" | awk '{print $1, ($2==""?"-":$2)}')
  if [ "$rm" != 1 ] && [ "$tran" != usb ] && [ "$tran" != mmc ] && [ "${FORCE:-0}" != 1 ]; then
    die "DEVICE=$device is not removable (transport: $tran); if it really is the card, run again with FORCE=1"
  fi
  size=$(blockdev --getsize64 "$dev")
  [ "$size" -ge "$(stat -c %s "$image")" ] || die "DEVICE=$device ($size bytes) is smaller than the image"
fi
[ "$check_only" = 1 ] && { log "DEVICE=$device looks safe to write"; exit 0; }

bytes=$(stat -c %s "$image")
log "writing $image ($((bytes >> 20)) MiB) to $device"
if [ "$kind" = block ]; then
  dd if="$image" of="$dev" bs=4M conv=fsync oflag=direct status=progress
  blockdev --flushbufs "$dev"
  read_back() { dd if="$dev" bs=4M iflag=direct,count_bytes count="$bytes" status=progress; }
else
  dd if="$image" of="$dev" bs=4M conv=fsync,notrunc status=progress
  read_back() { dd if="$dev" bs=4M iflag=count_bytes count="$bytes" status=progress; }
fi
want=$(sha256sum "$image" | cut -d' ' -f1)
log "verifying: reading $((bytes >> 20)) MiB back from $device"
got=$(read_back | sha256sum | cut -d' ' -f1)
[ "$got" = "$want" ] || die "verification FAILED: $device reads back $got, image is $want — do not use this card"
sync
log "verified: sha256 $want"
