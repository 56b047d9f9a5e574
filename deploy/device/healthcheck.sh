#!/usr/bin/env bash
# Post-deploy health check: services active, then `device selftest` (runtime, CPU, preprocessing
# checksum, the bundle's reference outputs) and one real inference with the current release on its
# bundled test frame against the active model. Exit 0 = healthy.
# SONOPI_PREFIX: staged root (tests); SONOPI_SYSTEMCTL: systemctl replacement (tests).
set -euo pipefail
log() { echo "healthcheck: $*" >&2; }
prefix=${SONOPI_PREFIX:-}
systemctl=${SONOPI_SYSTEMCTL:-systemctl}
units=${SONOPI_UNITS:-sonopi-ui.service sonopi-uplink.service}
settle=${SONOPI_HEALTH_SETTLE_S:-5}
cur="$prefix/opt/sonopi/current"
config="$prefix/etc/sonopi/device.toml"
model="$prefix/var/lib/sonopi/models/current"

sleep "$settle"   # a unit that crashes right after start must be seen as failed
for unit in $units; do
  if ! $systemctl is-active --quiet "$unit"; then
    log "FAIL: $unit is not active"
    $systemctl status --no-pager --lines=20 "$unit" >&2 || true
    exit 1
  fi
done
out=$(mktemp)
trap 'rm -f "$out"' EXIT
if ! timeout 120 "$cur/venv/bin/python" -m device --config "$config" selftest --model "$model" >"$out" 2>&1; then
  log "FAIL: selftest — this device does not compute what the workstation validated:"
  cat "$out" >&2
  exit 1
fi
log "selftest: $(grep -c '^PASS' "$out") passed, $(grep -c '^WARN' "$out") warning(s)"
if ! timeout 120 "$cur/venv/bin/python" -m device --config "$config" classify --model "$model" --json \
    "$cur/test-frame.png" >"$out"; then
  log "FAIL: inference on $cur/test-frame.png failed"
  cat "$out" >&2
  exit 1
fi
"$cur/venv/bin/python" - "$out" <<'PY'
import json, sys
result = json.loads(open(sys.argv[1]).read().splitlines()[0])
if "error" in result or "label" not in result:
    sys.exit(f"healthcheck: FAIL: inference result has no label: {result}")
print(f"healthcheck: ok: {result['label']} by {result['model']['name']} {result['model']['version']}", file=sys.stderr)
PY
