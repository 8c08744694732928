#!/usr/bin/env bash
# `make wheel-windows`: the maturin wheel for Windows (win_amd64, carrying luna-daemon.exe), built with the same
# cross toolchain as `make test-windows`, then its binary checked under Wine: --version, serve, a synthetic
# submit that must be written, stop.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/setup.sh"
# shellcheck source=env.sh
. "$here/env.sh"
luna_windows_env
cd "$here/../.."

python3 -m maturin --version >/dev/null 2>&1 ||
  python3 -m pip install --quiet --disable-pip-version-check "maturin>=1.5,<2"

out="$CARGO_TARGET_DIR/wheels"
rm -f "$out"/luna_daemon-*-win_amd64.whl
start=$(date +%s)
# LUNA_WINDOWS_WHEEL_PROFILE=dev packages the debug build instead (it reuses `make test-windows`'s artifacts,
# where a cold release build of std and every dependency takes as long again); the default is the release wheel.
profile="${LUNA_WINDOWS_WHEEL_PROFILE:-release}"
python3 -m maturin build --profile "$profile" --locked --target "$LUNA_WINDOWS_TARGET" --out "$out" >&2
wheel="$(ls "$out"/luna_daemon-*-win_amd64.whl)"
echo "[windows-wheel] built $(basename "$wheel") ($profile profile) in $(($(date +%s) - start)) s"

check="$(mktemp -d)"
trap 'wineserver -k 2>/dev/null || true; rm -rf "$check"' EXIT
python3 - "$wheel" "$check" <<'PY'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
    exe = [n for n in names if n.endswith("/scripts/luna-daemon.exe")]
    assert exe, f"no luna-daemon.exe in {wheel}: {names}"
    assert any(n.startswith("luna_daemon/") for n in names), f"no launcher package in {wheel}"
    with open(f"{dest}/luna-daemon.exe", "wb") as f:
        f.write(z.read(exe[0]))
PY
"$here/smoke.sh" "$check/luna-daemon.exe"
