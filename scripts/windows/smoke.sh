#!/usr/bin/env bash
# Checks a Windows luna-daemon.exe under Wine: --version, serve on a private pipe, a synthetic submit that must
# be written as a PNG, stop (and the server exits 0). Usage: smoke.sh path/to/luna-daemon.exe
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=env.sh
. "$here/env.sh"
luna_windows_env
exe="$1"
t="${LUNA_WINDOWS_TEST_TIMEOUT:-120}"
work="$(mktemp -d)"
mkdir -p "$work/out"
# The Windows program gets Windows paths (Z:\tmp\... is the same folder through Wine's Z: drive).
win() { winepath -w "$1" 2>/dev/null | tr -d '\r'; }
pipe="\\\\.\\pipe\\luna-daemon-smoke-$$"
run() { timeout "$t" wine "$exe" --socket "$pipe" "$@"; }
fail() { echo "[windows-smoke] FAILED: $*" >&2; exit 1; }

version="$(timeout "$t" wine "$exe" --version | tr -d '\r')"
echo "[windows-smoke] $version"
[[ "$version" == luna-daemon* ]] || fail "--version printed '$version'"

timeout "$t" wine "$exe" --socket "$pipe" serve --spool-dir "$(win "$work")\\spool" --state-dir "$(win "$work")\\state" \
  >"$work/serve.log" 2>&1 &
server=$!
up=0
for _ in $(seq 1 100); do
  if run stats >/dev/null 2>&1; then up=1; break; fi
  kill -0 "$server" 2>/dev/null || break
  sleep 0.2 # polling for start-up in a shell script; the Rust tests use explicit readiness instead
done
[ "$up" = 1 ] || { cat "$work/serve.log" >&2; fail "serve did not come up"; }
run submit --synthetic 2 --size 64x48 --output-dir "$(win "$work/out")" --filename smoke --wait ||
  { cat "$work/serve.log" >&2; fail "submit"; }
pngs=$(find "$work/out" -name 'smoke*.png' | wc -l)
[ "$pngs" -eq 2 ] || fail "expected 2 PNGs, found $pngs"
head -c 8 "$(find "$work/out" -name 'smoke*.png' | head -1)" | od -An -tx1 | grep -q "89 50 4e 47" ||
  fail "not a PNG"
run stop
wait "$server" || { cat "$work/serve.log" >&2; fail "serve exited non-zero after stop"; }
rm -rf "$work"
echo "[windows-smoke] ok: --version, serve, submit (2 PNGs written), stop"
