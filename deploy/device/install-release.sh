#!/usr/bin/env bash
# Install an unpacked release into its own venv, offline: install-release.sh /opt/sonopi/releases/<id>
# The venv uses the system's site-packages (Debian's PyQt5 / picamera2) and installs exactly the
# wheels bundled with the release (resolved on the workstation), with --no-index --no-deps.
# Idempotent and safe to interrupt: the release counts as installed only once .installed exists.
set -euo pipefail
log() { echo "install-release: $*" >&2; }
rel=${1:?usage: install-release.sh RELEASE_DIR}
base_python=${SONOPI_BASE_PYTHON:-/usr/bin/python3}

[ -f "$rel/RELEASE" ] || { log "error: $rel is not a sonopi release (no RELEASE file)"; exit 1; }
if [ -f "$rel/.installed" ]; then
  log "release $(cat "$rel/RELEASE") already installed"
  exit 0
fi
shopt -s nullglob
wheels=("$rel"/wheels/*.whl "$rel"/sonopi-*.whl)
[ ${#wheels[@]} -gt 0 ] || { log "error: $rel has no wheels"; exit 1; }

rm -rf "$rel/venv"   # an interrupted earlier attempt
log "creating venv in $rel/venv (system site-packages from $base_python)"
"$base_python" -m venv --system-site-packages "$rel/venv"
"$rel/venv/bin/python" -m pip install --quiet --no-index --no-deps --disable-pip-version-check \
  --no-compile "${wheels[@]}"
"$rel/venv/bin/python" -m compileall -q "$rel/venv/lib" >/dev/null || true
sync
touch "$rel/.installed"
log "release $(cat "$rel/RELEASE") installed"
