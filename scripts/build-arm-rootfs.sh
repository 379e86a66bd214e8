#!/usr/bin/env bash
# Build (once) an emulated arm64 Debian userland with python3, numpy and onnxruntime, for the
# "ARM board over SSH" end-to-end test. The result is cached OUTSIDE the repo and reused:
#   ${SHUFFLENAS_CACHE:-~/.cache/shufflenas}/arm64-rootfs.tar.zst
# Usage: scripts/build-arm-rootfs.sh [--print-path]   (prints the archive path when done)
# Needs root, apt-get (qemu-user-static debootstrap binfmt-support zstd) and the Debian mirror
# of this machine's apt sources. Takes ~6-8 minutes the first time (debootstrap's second stage
# runs under qemu); afterwards it returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."

cache_dir="${SHUFFLENAS_CACHE:-$HOME/.cache/shufflenas}"
archive="$cache_dir/arm64-rootfs.tar.zst"
suite="${ARM_ROOTFS_SUITE:-bookworm}"   # bookworm's python3 is 3.11: the cp311 wheels below
python_version=311

enable_binfmt() {  # let the kernel run aarch64 binaries through qemu (mounts binfmt_misc)
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || { echo "build-arm-rootfs: binfmt qemu-aarch64 unavailable" >&2; exit 1; }
}

if [ -s "$archive" ]; then
    [ "$(id -u)" = 0 ] && command -v update-binfmts >/dev/null && enable_binfmt
    echo "$archive"
    exit 0
fi
[ "$(id -u)" = 0 ] || { echo "build-arm-rootfs: needs root (debootstrap, chroot, binfmt)" >&2; exit 1; }

need=()
for package in qemu-user-static debootstrap binfmt-support zstd; do
    dpkg -s "$package" >/dev/null 2>&1 || need+=("$package")
done
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null; apt-get install -y -q "${need[@]}" >/dev/null; }
fi
enable_binfmt

mirror="${ARM_ROOTFS_MIRROR:-}"
if [ -z "$mirror" ]; then  # the machine's own Debian mirror (deb822 or one-line sources)
    mirror=$(grep -hoE '(URIs:|^deb)[[:space:]]+(\[[^]]*\][[:space:]]+)?https?://[^[:space:]]+/debian/?' \
        /etc/apt/sources.list.d/* /etc/apt/sources.list 2>/dev/null | grep -oE 'https?://[^[:space:]]+' | head -1 || true)
    mirror="${mirror:-http://deb.debian.org/debian}"
fi

mkdir -p "$cache_dir"
work=$(mktemp -d "$cache_dir/build.XXXXXX")
# --one-file-system: never follow a mount debootstrap may have left inside the rootfs.
trap 'umount -l "$work/rootfs/proc" "$work/rootfs/sys" 2>/dev/null || true; rm -rf --one-file-system "$work"' EXIT
rootfs="$work/rootfs"
echo "build-arm-rootfs: debootstrap $suite arm64 from $mirror (first stage)" >&2
debootstrap --arch=arm64 --foreign --variant=minbase --include=python3,ca-certificates \
    "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
echo "build-arm-rootfs: second stage under qemu (~5 min)" >&2
chroot "$rootfs" /debootstrap/debootstrap --second-stage >"$work/second.log" 2>&1 \
    || { tail -20 "$rootfs/debootstrap/debootstrap.log" "$work/second.log" >&2 2>/dev/null; exit 1; }
umount -l "$rootfs/proc" "$rootfs/sys" 2>/dev/null || true

# aarch64 wheels, installed by the host's pip straight into the rootfs (no pip under qemu).
ort_version=$(.venv/bin/python -c "import onnxruntime; print(onnxruntime.__version__)" 2>/dev/null || echo "")
ort_spec="onnxruntime${ort_version:+==$ort_version}"
python_bin=$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)
echo "build-arm-rootfs: installing aarch64 wheels ($ort_spec, numpy)" >&2
"$python_bin" -m pip install -q --disable-pip-version-check --only-binary=:all: \
    --python-version "$python_version" --implementation cp --abi "cp$python_version" \
    --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 \
    --target "$rootfs/usr/local/lib/python3.11/dist-packages" "$ort_spec" numpy 2>&1 | grep -v "is ignored" || true
[ -d "$rootfs/usr/local/lib/python3.11/dist-packages/onnxruntime" ] \
    || { echo "build-arm-rootfs: onnxruntime wheel did not install" >&2; exit 1; }

# A believable ARM /proc/cpuinfo: aarch64 onnxruntime under qemu segfaults on the host's x86
# one, so whoever enters the rootfs bind-mounts this file over /proc/cpuinfo.
cat >"$rootfs/etc/arm-cpuinfo" <<'EOF'
processor	: 0
BogoMIPS	: 50.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x4
CPU part	: 0xd0b
CPU revision	: 1
model name	: Cortex-A76 (emulated)

EOF

rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* "$rootfs"/debootstrap
tar -C "$rootfs" --numeric-owner -cf - . | zstd -q -T0 -10 -o "$archive.tmp"
mv "$archive.tmp" "$archive"
echo "$archive"
