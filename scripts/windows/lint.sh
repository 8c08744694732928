#!/usr/bin/env bash
# `make lint-windows`: clippy with -D warnings for x86_64-pc-windows-gnu (the cfg(windows) code is only
# compiled there), with Debian's clippy for the same rustc-web.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/setup.sh"
# shellcheck source=env.sh
. "$here/env.sh"
luna_windows_env
cd "$here/../.."
"$CARGO" clippy --locked --all-targets -- -D warnings
