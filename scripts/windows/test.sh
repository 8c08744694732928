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

# One results file per run: another checkout may be testing with the same cache (and target dir) right now.
mkdir -p "$CARGO_TARGET_DIR"
results="$(mktemp "$CARGO_TARGET_DIR/wine-test-results.XXXXXX")"
trap 'rm -f "$results"' EXIT
export LUNA_WINDOWS_RESULTS="$results"

start=$(date +%s)
"$CARGO" test --locked --no-run "$@"
echo "[windows-test] build: $(($(date +%s) - start)) s"
rc=0
"$CARGO" test --locked --no-fail-fast "$@" || rc=$?
# Every test's Wine process has ended (runner.sh); let the prefix's wineserver go when idle, killing it (and any
# stray process of this prefix, e.g. of a concurrent run) only if it does not within a minute.
timeout 60 wineserver -w 2>/dev/null || wineserver -k 2>/dev/null || true

count() { grep -c "^$1 " "$results" || true; }
p=$(count passed) f=$(count failed) t=$(count timeout) i=$(count ignored)
echo "[windows-test] under Wine: $p passed, $((f + t)) failed ($t timed out), $i ignored; $(($(date +%s) - start)) s"
grep -E '^(failed|timeout) ' "$results" || true
[ "$rc" -eq 0 ] && [ $((f + t)) -eq 0 ]
