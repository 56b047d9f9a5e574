#!/usr/bin/env bash
# Download every wheel the device needs (aarch64, CPython 3.11, glibc 2.36 = Raspberry Pi OS
# Bookworm) into DIR, on the workstation, so first boot installs with no internet:
#   deploy/fetch-wheels.sh build/wheels-aarch64-cp311
# pip never widens a platform tag, so every manylinux level up to the Pi's glibc is listed:
# LiteRT ships manylinux_2_27_aarch64, tflite-runtime manylinux_2_34_aarch64, numpy 2_17 ...
# deploy/device-constraints.txt pins what must match Debian's own packages (numpy<2 for picamera2).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:?usage: fetch-wheels.sh DIR}
python=${PYTHON:-python3}
mkdir -p "$dir"
mapfile -t reqs < <("$python" - "$here/../pyproject.toml" <<'PY'
import sys, tomllib
for dep in tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]:
    print(dep)
PY
)
platforms=()
# every glibc level from Bookworm's 2.36 down to 2.17 (the oldest aarch64 manylinux), then the legacy
# alias of 2_17 and plain linux: a wheel tagged with a skipped level would be "not found".
for minor in $(seq 36 -1 17); do
  platforms+=(--platform "manylinux_2_${minor}_aarch64")
done
for tag in manylinux2014 linux; do
  platforms+=(--platform "${tag}_aarch64")
done
echo "fetch-wheels: ${#reqs[@]} requirements -> $dir" >&2
"$python" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
  --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none "${platforms[@]}" \
  --constraint "$here/device-constraints.txt" --dest "$dir" "${reqs[@]}"
ls "$dir" | grep -Eq '^(ai_edge_litert|tflite_runtime)-' \
  || { echo "fetch-wheels: error: no LiteRT/tflite-runtime wheel for aarch64 in $dir" >&2; exit 1; }
echo "fetch-wheels: $(ls "$dir" | wc -l) wheels in $dir" >&2
