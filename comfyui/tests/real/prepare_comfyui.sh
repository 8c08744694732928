#!/usr/bin/env bash
# Installs the real ComfyUI 0.3.64 (CPU) into a venv cached OUTSIDE the repository and prints the ComfyUI
# directory and the venv's python, one per line. The cache is keyed by the hashes of the lock file, the pack's
# requirements and the source, so CI on the same machine reuses it (warm: seconds); a cold machine installs it
# (3.7 GB download: 3 minutes on a quiet machine, 20 on a busy one).
#
#   LUNA_COMFYUI_SOURCE  the ComfyUI source tarball (default /work/shared/comfyui/ComfyUI-0.3.64.tar.gz; no PyPI
#                        package ships ComfyUI core). Its sha256 is checked.
#   LUNA_COMFYUI_CACHE   cache root (default $HOME/.cache/luna-daemon-comfyui)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
lock="$here/comfyui-requirements-lock.txt"
source_tar="${LUNA_COMFYUI_SOURCE:-/work/shared/comfyui/ComfyUI-0.3.64.tar.gz}"
expected_sha=b28af30b927f70b5cb4446680cd311cc470ed536374e1f20a7a2671d39400301
cache_root="${LUNA_COMFYUI_CACHE:-$HOME/.cache/luna-daemon-comfyui}"

if [ ! -f "$source_tar" ]; then
  echo "prepare_comfyui: ComfyUI source $source_tar not found (set LUNA_COMFYUI_SOURCE)" >&2
  exit 2
fi
pack_requirements="$here/../../requirements.txt"
key="$(cat "$lock" "$pack_requirements" | sha256sum | cut -c1-16)-${expected_sha:0:8}"
dir="$cache_root/$key"
if [ ! -f "$dir/ready" ]; then
  actual_sha="$(sha256sum "$source_tar" | cut -d' ' -f1)"
  if [ "$actual_sha" != "$expected_sha" ]; then
    echo "prepare_comfyui: $source_tar has sha256 $actual_sha, expected $expected_sha" >&2
    exit 2
  fi
  echo "prepare_comfyui: installing ComfyUI into $dir (cold: a few minutes)" >&2
  rm -rf "$dir.partial"
  mkdir -p "$dir.partial"
  tar xzf "$source_tar" -C "$dir.partial"
  python3 -m venv "$dir.partial/venv"
  "$dir.partial/venv/bin/python" -m pip install --quiet --disable-pip-version-check -U 'pip>=26' >&2
  # --no-deps keeps out the CUDA-only packages torch declares but never loads on CPU (see the lock's origin).
  "$dir.partial/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$lock" >&2
  # What a user installs for the pack (its numpy and pillow are already satisfied by the lock).
  "$dir.partial/venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$pack_requirements" >&2
  # Renamed only once complete, so an interrupted install is never taken for a ready one. (Console scripts keep
  # the .partial path in their shebang; the tests only ever run venv/bin/python, which works from anywhere.)
  rm -rf "$dir"
  mv "$dir.partial" "$dir"
  touch "$dir/ready"
fi
echo "$dir/ComfyUI"
echo "$dir/venv/bin/python"
