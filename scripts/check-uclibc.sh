#!/usr/bin/env bash
# check-uclibc.sh [TARGET...]: proves that raopd and every crate it depends on compile for the
# uClibc MIPS targets (default: mips-unknown-linux-uclibc mipsel-unknown-linux-uclibc), with
# build-std on stable Rust (RUSTC_BOOTSTRAP=1, as scripts/build-mips.sh does). No uClibc
# toolchain or sysroot can be had here, so nothing is linked: `cargo check` runs every crate
# through the compiler up to code generation. alsa-sys's build script is pointed at the musl
# alsa-lib of scripts/setup-mips.sh (same headers, same ABI for what is declared); the link
# step with an OpenWrt/Buildroot uClibc-ng SDK is in docs/mips.md.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
# shellcheck source=scripts/mips-common.sh
. scripts/mips-common.sh
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(mips-unknown-linux-uclibc mipsel-unknown-linux-uclibc)
for t in "${targets[@]}"; do
  musl=${t%-uclibc}-musl
  pc=$(mips_alsa_root "$musl")/usr/lib/pkgconfig
  [ -d "$pc" ] || { echo "check-uclibc: no alsa-lib for $musl at $pc: run scripts/setup-mips.sh" >&2; exit 2; }
  echo "check-uclibc: cargo check --target $t"
  RUSTC_BOOTSTRAP=1 PKG_CONFIG_ALLOW_CROSS=1 PKG_CONFIG_PATH=$pc PKG_CONFIG_LIBDIR=$pc \
    cargo check -Zbuild-std=std,panic_unwind --target "$t" \
    --target-dir "${CARGO_TARGET_DIR:-target}/uclibc-check"
done
echo "check-uclibc: ${targets[*]} compile"
