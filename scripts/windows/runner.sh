#!/usr/bin/env bash
# Cargo's target runner for x86_64-pc-windows-gnu (CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER).
# For a libtest binary (cargo test), it runs every test in its own Wine process under a timeout, so a hang fails
# that one test instead of the whole run, and appends one line per test to $LUNA_WINDOWS_RESULTS:
#   <passed|failed|timeout|ignored> <binary> <test name>
# Anything else (cargo run, a doctest, a harness = false binary) is passed straight to Wine under the same timeout.
set -uo pipefail

exe="$1"
shift
timeout_s="${LUNA_WINDOWS_TEST_TIMEOUT:-120}"
results="${LUNA_WINDOWS_RESULTS:-/dev/null}"
# Tells the tests they run under Wine (platform::wine_version must then detect it; see its test).
export LUNA_WINDOWS_RUNNER=wine

is_libtest_run() {
  # cargo test passes nothing or libtest options/filters; --list is cargo asking for names itself.
  for a in "$@"; do
    case "$a" in --list | --help | -h | --bench) return 1 ;; esac
  done
  timeout "$timeout_s" wine "$exe" --list --format terse >/dev/null 2>&1
}

if ! is_libtest_run "$@"; then
  exec timeout "$timeout_s" wine "$exe" "$@"
fi

# Options cargo forwards (e.g. --include-ignored, --test-threads) stay; positional filters narrow the list.
opts=()
filters=()
include_ignored=0
for a in "$@"; do
  case "$a" in
    --include-ignored) include_ignored=1 ;;
    --ignored) include_ignored=2 ;;
    --quiet | -q | --nocapture | --show-output) opts+=("$a") ;;
    --exact) opts+=("$a") ;;
    -*) ;;
    *) filters+=("$a") ;;
  esac
done

list_tests() { # $1: extra flag (--ignored to list only ignored tests)
  timeout "$timeout_s" wine "$exe" --list --format terse ${1:+"$1"} "${filters[@]}" 2>/dev/null |
    sed -n 's/^\(.*\): test$/\1/p' | tr -d '\r'
}

name="$(basename "$exe")"
mapfile -t all < <(list_tests)
mapfile -t ignored < <(list_tests --ignored)
declare -A is_ignored=()
for t in "${ignored[@]}"; do is_ignored["$t"]=1; done

passed=0 failed=0 skipped=0
for t in "${all[@]}"; do
  [ -n "$t" ] || continue
  ign=${is_ignored["$t"]:-0}
  if { [ "$ign" = 1 ] && [ "$include_ignored" = 0 ]; } || { [ "$ign" = 0 ] && [ "$include_ignored" = 2 ]; }; then
    echo "ignored $name $t" >>"$results"
    skipped=$((skipped + 1))
    continue
  fi
  extra=()
  [ "$ign" = 1 ] && extra=(--ignored)
  log="$(mktemp)"
  timeout --kill-after=10 "$timeout_s" wine "$exe" --exact "$t" --test-threads=1 "${extra[@]}" >"$log" 2>&1
  rc=$?
  if [ $rc -eq 0 ] && grep -q "1 passed" "$log"; then
    echo "passed $name $t" >>"$results"
    passed=$((passed + 1))
  else
    status=failed
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && status=timeout
    echo "$status $name $t" >>"$results"
    echo "---- $name $t: $status (exit $rc) ----"
    tail -n 40 "$log"
    failed=$((failed + 1))
  fi
  rm -f "$log"
done
echo "$name: $passed passed, $failed failed, $skipped ignored"
[ "$failed" -eq 0 ]
