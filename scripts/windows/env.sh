# Sourced by the other scripts in scripts/windows/: where the Windows toolchain lives and how cargo reaches it.
# Everything sits in a cache folder OUTSIDE the repository, so a fresh clone on the same machine reuses the
# extracted compiler, the Wine prefix and the build (CARGO_TARGET_DIR); delete the folder for a cold run.
# shellcheck shell=bash

LUNA_WINDOWS_CACHE="${LUNA_WINDOWS_CACHE:-$HOME/.cache/luna-daemon-windows}"
# Debian's rustc-web: the one compiler here whose version matches the std sources it ships (rust-web-src), which
# -Zbuild-std needs because no Windows std is installable for rustup's compilers on this machine.
LUNA_WINDOWS_RUST_VERSION="${LUNA_WINDOWS_RUST_VERSION:-1.96.0+dfsg1-1~deb12u2}"
LUNA_WINDOWS_TOOLCHAIN="$LUNA_WINDOWS_CACHE/toolchain"
LUNA_WINDOWS_TARGET=x86_64-pc-windows-gnu
export LUNA_WINDOWS_CACHE LUNA_WINDOWS_TOOLCHAIN LUNA_WINDOWS_TARGET LUNA_WINDOWS_RUST_VERSION

luna_windows_env() {
  local tc="$LUNA_WINDOWS_TOOLCHAIN"
  export PATH="$tc/usr/bin:$PATH"
  export RUSTC="$tc/usr/bin/rustc" RUSTDOC="$tc/usr/bin/rustdoc"
  export LD_LIBRARY_PATH="$tc/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # rustup's proxies must not pick a compiler: the folder's own rustc/cargo are used by absolute path.
  unset RUSTUP_TOOLCHAIN
  export RUSTC_BOOTSTRAP=1
  export CARGO_UNSTABLE_BUILD_STD=std,panic_abort
  export CARGO_HOME="$LUNA_WINDOWS_CACHE/cargo-home"
  export CARGO_TARGET_DIR="${LUNA_WINDOWS_TARGET_DIR:-$LUNA_WINDOWS_CACHE/target}"
  export CARGO_BUILD_TARGET="$LUNA_WINDOWS_TARGET"
  export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
  export CC_x86_64_pc_windows_gnu=x86_64-w64-mingw32-gcc
  export CXX_x86_64_pc_windows_gnu=x86_64-w64-mingw32-g++
  export AR_x86_64_pc_windows_gnu=x86_64-w64-mingw32-ar
  # Each test binary goes through runner.sh: one Wine process per test, each under a timeout (a hang fails).
  export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="$LUNA_WINDOWS_SCRIPTS/runner.sh"
  export WINEPREFIX="$LUNA_WINDOWS_CACHE/wineprefix"
  export WINEDEBUG=-all
  export WINEDLLOVERRIDES="mscoree,mshtml="
  export CARGO_TERM_COLOR=never
  CARGO="$tc/usr/bin/cargo"
  export CARGO
}

LUNA_WINDOWS_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export LUNA_WINDOWS_SCRIPTS
