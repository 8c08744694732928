#!/usr/bin/env bash
# Installs what the Windows build and test need on a Debian 12 machine; idempotent (skips what is there).
#   apt: mingw-w64 (linker, C compiler for libwebp/mozjpeg), nasm, Wine 8, the rustc-web run-time libraries;
#   cache: Debian's rustc-web + rust-web-src extracted with dpkg -x (it conflicts with the system rustup package,
#   so it is never installed system-wide), the ProcessPrng shim DLL, a private Wine prefix.
set -euo pipefail
# shellcheck source=env.sh
. "$(dirname "$0")/env.sh"

log() { echo "[windows-setup] $*" >&2; }

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

APT_PACKAGES=(gcc-mingw-w64-x86-64 g++-mingw-w64-x86-64 nasm wine wine64
  libllvm22 libgit2-1.5 libssh2-1 libcurl4 libsqlite3-0)
TOOLCHAIN_PACKAGES=(rustc-web cargo-web libstd-rust-web-1.96 libstd-rust-web-dev rust-web-src rust-web-clippy)

install_apt_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  log "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

extract_toolchain() {
  local stamp="$LUNA_WINDOWS_TOOLCHAIN/.extracted-$LUNA_WINDOWS_RUST_VERSION"
  [ -f "$stamp" ] && return
  log "extracting rustc-web $LUNA_WINDOWS_RUST_VERSION into $LUNA_WINDOWS_TOOLCHAIN"
  local debs="$LUNA_WINDOWS_CACHE/debs"
  rm -rf "$LUNA_WINDOWS_TOOLCHAIN" && mkdir -p "$debs" "$LUNA_WINDOWS_TOOLCHAIN"
  local specs=()
  for p in "${TOOLCHAIN_PACKAGES[@]}"; do specs+=("$p=$LUNA_WINDOWS_RUST_VERSION"); done
  (cd "$debs" && apt-get download -q "${specs[@]}" >/dev/null 2>&1) || {
    $SUDO apt-get update -qq
    (cd "$debs" && apt-get download -q "${specs[@]}" >/dev/null)
  }
  for deb in "$debs"/*.deb; do dpkg -x "$deb" "$LUNA_WINDOWS_TOOLCHAIN"; done
  # -Zbuild-std looks for the std sources at <sysroot>/lib/rustlib/src/rust; rust-web-src ships that link.
  [ -d "$LUNA_WINDOWS_TOOLCHAIN/usr/lib/rustlib/src/rust/library" ] || {
    log "std sources missing under $LUNA_WINDOWS_TOOLCHAIN/usr/lib/rustlib/src/rust"
    exit 1
  }
  touch "$stamp"
}

build_prng_shim() {
  local dll="$LUNA_WINDOWS_CACHE/shim/bcryptprimitives.dll"
  if [ ! -f "$dll" ] || [ "$LUNA_WINDOWS_SCRIPTS/prng_shim.c" -nt "$dll" ]; then
    log "building the ProcessPrng shim DLL (Wine 8 lacks bcryptprimitives.dll)"
    mkdir -p "$(dirname "$dll")"
    x86_64-w64-mingw32-gcc -shared -O2 -o "$dll" "$LUNA_WINDOWS_SCRIPTS/prng_shim.c" \
      "$LUNA_WINDOWS_SCRIPTS/prng_shim.def" -ladvapi32
  fi
}

init_wine_prefix() {
  local sys32="$WINEPREFIX/drive_c/windows/system32"
  if [ ! -d "$sys32" ]; then
    log "initialising the Wine prefix $WINEPREFIX"
    mkdir -p "$WINEPREFIX"
    wine wineboot --init >/dev/null 2>&1
    wineserver -w
  fi
  cmp -s "$LUNA_WINDOWS_CACHE/shim/bcryptprimitives.dll" "$sys32/bcryptprimitives.dll" ||
    cp "$LUNA_WINDOWS_CACHE/shim/bcryptprimitives.dll" "$sys32/bcryptprimitives.dll"
}

mkdir -p "$LUNA_WINDOWS_CACHE"
install_apt_packages
extract_toolchain
luna_windows_env
build_prng_shim
init_wine_prefix
log "ready: $("$RUSTC" --version), $(wine --version)"
