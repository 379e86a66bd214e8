#!/usr/bin/env bash
# System packages the test suite drives for real (Debian names). Installs only what is missing;
# without root or apt-get it says what to install and the tests that need them skip.
set -uo pipefail
# g++ and ninja-build: the fused BatchNorm training kernels (shufflenet_core/fused.py) compile with them.
packages=(dataset-fashion-mnist chromium openssh-server qemu-user-static debootstrap binfmt-support zstd postgresql g++ ninja-build)
missing=()
for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "note: install these for the full test suite: sudo apt-get install -y ${missing[*]}" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1; apt-get install -y -q "${missing[@]}" >/dev/null; }
