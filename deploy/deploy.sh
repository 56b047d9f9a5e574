#!/usr/bin/env bash
# make deploy / make rollback: update a running device over SSH with Ansible (ansible-core).
#   deploy/deploy.sh user@host[:port] [ansible-playbook options...]
#   deploy/deploy.sh --rollback user@host[:port] [ansible-playbook options...]
# Deploy builds (or reuses) the content-addressed release for the current tree, then runs
# deploy/ansible/deploy.yml: push + install into /opt/sonopi/releases/<id>, atomic switch of
# /opt/sonopi/current, restart, health check, automatic rollback on failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
die() { echo "deploy: error: $*" >&2; exit 1; }
mode=deploy
[ "${1:-}" = "--rollback" ] && { mode=rollback; shift; }
target=${1:-}
[ -n "$target" ] || die "PI= is missing: give user@host or user@host:port"
shift
case "$target" in *@*) ;; *) die "PI=$target: expected user@host[:port]";; esac
user=${target%%@*}; hostport=${target#*@}
host=${hostport%:*}; port=22
[ "$host" != "$hostport" ] && port=${hostport##*:}
python=${PYTHON:-python3}
playbook=${ANSIBLE_PLAYBOOK:-$(dirname "$python")/ansible-playbook}
[ -x "$playbook" ] || playbook=$(command -v ansible-playbook) || die "ansible-playbook not found (pip install -e '.[deploy]')"
export ANSIBLE_CONFIG="$here/ansible/ansible.cfg"
common=(-i "$host," -e "ansible_user=$user" -e "ansible_port=$port")

if [ "$mode" = rollback ]; then
  exec "$playbook" "${common[@]}" "$here/ansible/rollback.yml" "$@"
fi
KEYS_DIR=${KEYS_DIR:-$HOME/.config/sonopi/keys}
MODEL=${MODEL:-$repo/models/sonopi-lite0}
MODEL_PUBKEY=${MODEL_PUBKEY:-$KEYS_DIR/model-signing.pub}
WHEELS=${WHEELS:-$repo/build/wheels-aarch64-cp311}
[ -n "$(ls "$WHEELS"/*.whl 2>/dev/null)" ] || PYTHON="$python" "$here/fetch-wheels.sh" "$WHEELS"
rel=$("$python" "$here/build_release.py" --model "$MODEL" --public-key "$MODEL_PUBKEY" --wheels "$WHEELS" \
      --out "${RELEASES:-$repo/build/release}" ${RELEASE_VERSION:+--version "$RELEASE_VERSION"} | tail -1) \
  || die "building the release failed"
id=$(cat "$rel/RELEASE")
exec "$playbook" "${common[@]}" -e "release_id=$id" -e "release_tar=$(dirname "$rel")/sonopi-$id.tar" \
  "$here/ansible/deploy.yml" "$@"
