#!/usr/bin/env bash
# Build a bootable raopd firmware image for the emulated MIPS Malta board (little-endian,
# `qemu-system-mipsel -M malta -cpu 24Kc`): a kernel plus an initramfs holding busybox, the
# static mipsel-musl raopd, its ALSA configuration, the snd-aloop and network drivers, and an
# init that starts raopd at boot the way OpenWrt's procd does (respawn, log on the console).
#
#   scripts/build-image.sh            # writes target/image/{vmlinuz,initramfs.cpio.gz}
#   scripts/run-image.sh              # boots it (see there)
#
# Everything on the guest side except raopd and the capture helper comes from Debian's own
# mipsel packages, fetched with `apt-get download` and unpacked with `dpkg-deb -x` (nothing is
# installed for the foreign architecture):
#   linux-image-<abi>-4kc-malta   the ABI is read from the linux-image-4kc-malta metapackage
#   busybox-static                shell, init, ip, modprobe, nc, top
# The raopd binary is target/mipsel-unknown-linux-musl/release/raopd (scripts/build-mips.sh
# builds it when it is missing; RAOPD_IMAGE_BIN overrides the path). The capture helper
# (examples/loopback_capture.rs: the loopback's capture side served over TCP port 5555) is built
# here with the same toolchain. Needs root only when the mipsel architecture is not yet known to
# apt (scripts/setup-mips.sh adds it). Debian packages are cached in $RAOPD_MIPS_CACHE/image.
# Env: RAOPD_IMAGE_DIR output dir (default <target>/image).
set -euo pipefail

# shellcheck source=scripts/mips-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/mips-common.sh"

T=mipsel-unknown-linux-musl
cd "$MIPS_REPO_ROOT"
target_dir="${CARGO_TARGET_DIR:-$MIPS_REPO_ROOT/target}"
out="${RAOPD_IMAGE_DIR:-$target_dir/image}"
bin="${RAOPD_IMAGE_BIN:-$target_dir/$T/release/raopd}"
cache="$MIPS_CACHE/image"
t0=$SECONDS

for tool in apt-get apt-cache dpkg-deb depmod cpio gzip; do
  command -v "$tool" >/dev/null || mips_die "$tool missing (run scripts/setup-test-deps.sh)"
done
if ! dpkg --print-foreign-architectures | grep -qx mipsel; then
  [ "$(id -u)" = 0 ] || mips_die "apt does not know the mipsel architecture; run as root once"
  dpkg --add-architecture mipsel
  apt-get -q update
fi

# --- Debian packages ------------------------------------------------------------------------
# The kernel ABI: linux-image-4kc-malta depends on linux-image-<abi>-4kc-malta.
kpkg=$(apt-cache show --no-all-versions linux-image-4kc-malta:mipsel 2>/dev/null \
  | sed -n 's/^Depends:.*\(linux-image-[0-9][^ ,]*-4kc-malta\).*/\1/p' | head -n1)
if [ -z "$kpkg" ]; then
  [ "$(id -u)" = 0 ] && apt-get -q update
  kpkg=$(apt-cache show --no-all-versions linux-image-4kc-malta:mipsel \
    | sed -n 's/^Depends:.*\(linux-image-[0-9][^ ,]*-4kc-malta\).*/\1/p' | head -n1)
fi
[ -n "$kpkg" ] || mips_die "cannot find the kernel package behind linux-image-4kc-malta:mipsel"
abi=${kpkg#linux-image-}
mkdir -p "$cache/debs"
fetch() { # fetch PKG -> path of the unpacked tree
  local pkg=$1 ver deb dir
  ver=$(apt-cache show --no-all-versions "$pkg:mipsel" | sed -n 's/^Version: //p' | head -n1)
  [ -n "$ver" ] || mips_die "no mipsel package $pkg"
  dir="$cache/unpacked/$pkg-${ver//:/%3a}"
  if [ ! -d "$dir" ]; then
    deb=$(ls "$cache/debs/${pkg}_${ver//:/%3a}_mipsel.deb" 2>/dev/null || true)
    if [ -z "$deb" ]; then
      mips_log "apt-get download $pkg:mipsel=$ver"
      (cd "$cache/debs" && apt-get download -q "$pkg:mipsel=$ver" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
      deb=$(ls "$cache/debs/${pkg}_${ver//:/%3a}_mipsel.deb" 2>/dev/null || true)
      [ -n "$deb" ] || mips_die "apt-get download $pkg:mipsel failed"
    fi
    rm -rf "$dir.tmp"
    mkdir -p "$dir.tmp"
    dpkg-deb -x "$deb" "$dir.tmp"
    mv "$dir.tmp" "$dir"
  fi
  echo "$dir"
}
kdir=$(fetch "$kpkg")
bbdir=$(fetch busybox-static)
mips_log "kernel $kpkg, $(basename "$bbdir")"

# --- raopd and the capture helper -----------------------------------------------------------
[ -x "$bin" ] || bash scripts/build-mips.sh "$T"
[ -x "$bin" ] || mips_die "$bin missing"
mips_log "building the capture helper (examples/loopback_capture.rs) for $T"
RUSTC_BOOTSTRAP=1 cargo build -q --release "$MIPS_BUILD_STD" "$MIPS_BUILD_STD_FEATURES" "${MIPS_PANIC_ARGS[@]}" \
  --target "$T" --example loopback_capture
capture="$target_dir/$T/release/examples/loopback_capture"
[ -x "$capture" ] || mips_die "$capture missing"

# --- the root file system -------------------------------------------------------------------
root="$out/rootfs"
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/init.d,proc,sys,dev,tmp,run,root,var} "$out"
ln -s /run "$root/var/run"  # as on OpenWrt: raopd's control socket is /var/run/raopd.sock
ln -s /tmp "$root/var/log"
cp "$bbdir/bin/busybox" "$root/bin/busybox"
# One symlink per applet; the list comes from the binary itself, run under qemu-user. Debian's
# mipsel userland is hard-float: on the guest's FPU-less 24Kc the kernel emulates the FPU, but
# qemu-user cannot, so no `-cpu 24Kc` here.
applets=$(qemu-mipsel "$root/bin/busybox" --list-full) || mips_die "cannot list busybox applets"
[ -n "$applets" ] || mips_die "busybox lists no applets"
for applet in $applets; do
  mkdir -p "$root/$(dirname "$applet")"
  [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done
cp "$bin" "$root/usr/sbin/raopd"
cp "$capture" "$root/usr/bin/loopback_capture"

# Kernel modules: snd-aloop (the sound card) and pcnet32 (Malta's on-board Ethernet), with
# everything they depend on (from the package's own modules.dep, made by the host's depmod).
moddir="$kdir/lib/modules/$abi"
[ -f "$moddir/modules.dep" ] || depmod -b "$kdir" "$abi"
want=(snd-aloop pcnet32)
declare -A seen=()
queue=()
for m in "${want[@]}"; do
  p=$(find "$moddir/kernel" -name "$m.ko*" | head -n1)
  [ -n "$p" ] || mips_die "module $m not in $kpkg"
  queue+=("${p#"$moddir"/}")
done
while [ ${#queue[@]} -gt 0 ]; do
  m=${queue[0]}; queue=("${queue[@]:1}")
  [ -n "${seen[$m]:-}" ] && continue
  seen[$m]=1
  deps=$(grep "^$m:" "$moddir/modules.dep" | cut -d: -f2)
  for d in $deps; do queue+=("$d"); done
done
for m in "${!seen[@]}"; do
  mkdir -p "$root/lib/modules/$abi/$(dirname "$m")"
  cp "$moddir/$m" "$root/lib/modules/$abi/$m"
done
cp "$moddir"/modules.{order,builtin,builtin.modinfo} "$root/lib/modules/$abi/"
depmod -b "$root" "$abi"

# ALSA: the configuration tree of the static alsa-lib linked into raopd (same version), and
# /etc/asound.conf making the loopback card the default device, so raopd keeps OpenWrt's
# default output `alsa:default`. `hw`, not `plughw`: nothing converts the stream on the way.
mkdir -p "$root/usr/share"
cp -a "$(mips_alsa_root "$T")/usr/share/alsa" "$root/usr/share/alsa"
rm -rf "$root/usr/share/alsa/ucm" "$root/usr/share/alsa/ucm2"
cp board/image/asound.conf "$root/etc/asound.conf"
cp board/image/init "$root/init"
cp board/image/inittab "$root/etc/inittab"
cp board/image/raopd.service "$root/etc/init.d/raopd"
chmod 755 "$root/init" "$root/etc/init.d/raopd"
echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"
echo "raopd-malta" > "$root/etc/hostname"

# --- kernel and initramfs -------------------------------------------------------------------
cp "$kdir/boot/vmlinuz-$abi" "$out/vmlinuz"
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) \
  | gzip -9 > "$out/initramfs.cpio.gz.tmp"
mv "$out/initramfs.cpio.gz.tmp" "$out/initramfs.cpio.gz"
echo "$abi" > "$out/kernel-abi"
k=$(stat -c %s "$out/vmlinuz"); i=$(stat -c %s "$out/initramfs.cpio.gz")
printf 'image: kernel %s KiB + initramfs %s KiB = %s KiB (raopd %s KiB) in %s\n' \
  $((k / 1024)) $((i / 1024)) $(((k + i) / 1024)) $(($(stat -c %s "$bin") / 1024)) "${out#"$MIPS_REPO_ROOT"/}"
mips_log "image built in $((SECONDS - t0))s"
