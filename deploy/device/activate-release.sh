#!/usr/bin/env bash
# Make an installed release current: activate-release.sh <release-id>
# 1. install its model bundle into the model store (Ed25519-verified; a refused bundle stops here and
#    nothing is switched), 2. switch /opt/sonopi/current atomically (symlink + rename), keeping the
#    one before as /opt/sonopi/previous. Prints "changed" or "unchanged" on stdout (for Ansible).
# SONOPI_PREFIX (tests: a staged root) is prepended to every system path.
set -euo pipefail
log() { echo "activate-release: $*" >&2; }
id=${1:?usage: activate-release.sh RELEASE_ID}
prefix=${SONOPI_PREFIX:-}
opt="$prefix/opt/sonopi"
rel="$opt/releases/$id"
[ -f "$rel/.installed" ] || { log "error: release $id is not installed in $opt/releases"; exit 1; }

"$rel/venv/bin/python" -m device.model.store \
  --root "$prefix/var/lib/sonopi/models" --public-key "$prefix/etc/sonopi/model-signing.pub" \
  install "$rel/model" >&2

current=$(readlink "$opt/current" 2>/dev/null || true)
if [ "$current" = "releases/$id" ]; then
  echo unchanged
  exit 0
fi
if [ -n "$current" ]; then
  ln -sfn "$current" "$opt/.previous.tmp"
  mv -T "$opt/.previous.tmp" "$opt/previous"
fi
ln -sfn "releases/$id" "$opt/.current.tmp"
mv -T "$opt/.current.tmp" "$opt/current"
sync
log "current release: $id (was: ${current#releases/})"
echo changed
