#!/usr/bin/env bash
# `make test-windows`: set up (idempotent), build for x86_64-pc-windows-gnu and run `cargo test` for that target
# under Wine, one Wine process per test with a per-test timeout (runner.sh); prints "N passed, N failed".
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/setup.sh"
# shellcheck source=env.sh
. "$here/env.sh"
luna_windows_env
cd "$here/../.."

results="$CARGO_TARGET_DIR/wine-test-results.txt"
mkdir -p "$CARGO_TARGET_DIR"
: >"$results"
export LUNA_WINDOWS_RESULTS="$results"

start=$(date +%s)
"$CARGO" test --locked --no-run "$@"
echo "[windows-test] build: $(($(date +%s) - start)) s"
rc=0
"$CARGO" test --locked --no-fail-fast "$@" || rc=$?
wineserver -k 2>/dev/null || true

count() { grep -c "^$1 " "$results" || true; }
p=$(count passed) f=$(count failed) t=$(count timeout) i=$(count ignored)
echo "[windows-test] under Wine: $p passed, $((f + t)) failed ($t timed out), $i ignored; $(($(date +%s) - start)) s"
grep -E '^(failed|timeout) ' "$results" || true
[ "$rc" -eq 0 ] && [ $((f + t)) -eq 0 ]
