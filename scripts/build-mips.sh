#!/usr/bin/env bash
# Build raopd (release profile) for the MIPS targets and print the binary sizes.
#
#   scripts/build-mips.sh                          # all four targets
#   scripts/build-mips.sh mips-unknown-linux-musl  # one or more targets
#   scripts/build-mips.sh TARGET... -- --no-default-features   # extra cargo build args
#   scripts/build-mips.sh --openwrt-flags mipsel-unknown-linux-musl  # as OpenWrt's feed builds
#   scripts/build-mips.sh --dynamic mipsel-unknown-linux-musl  # linked like OpenWrt's packages
#   scripts/build-mips.sh --dynamic --pie mipsel-unknown-linux-musl  # the same, as a PIE
#
# Targets: mips-unknown-linux-gnu, mipsel-unknown-linux-gnu (Debian cross gcc, glibc, for
# tests), mips-unknown-linux-musl, mipsel-unknown-linux-musl (static, soft-float, for OpenWrt
# ath79 / ramips); and, only when named, x86_64-unknown-linux-musl (the musl targets'
# settings on the host's architecture, to measure natively). Settings (linker, rustflags,
# pkg-config) live in .cargo/config.toml; this script adds what cannot live there:
# RUSTC_BOOTSTRAP=1 and -Zbuild-std (tier-3 targets).
# Runs scripts/setup-mips.sh first, which is a no-op (about a second) once set up.
# Honours CARGO_TARGET_DIR. Env: MIPS_BUILD_SEPARATE=1 builds the targets one cargo run at a
# time (per-target timings) instead of in one run (better use of both cores during LTO).
# --openwrt-flags (musl targets only) builds the way the packages feed's rust-package.mk
# does, into <target dir>/openwrt-flags/: RUSTFLAGS in the environment (so cargo ignores the
# rustflags of .cargo/config.toml, and --cfg fix_y2038 must be in it, as the package Makefile
# adds it), overflow checks on, no debug assertions, and the panic strategy the package
# Makefile sets over the feed's (abort).
# --dynamic (musl targets only) links the way OpenWrt's packages are linked: against musl's
# libc.so and alsa-lib's libasound.so.2 (both from the target's dynamic sysroot that
# scripts/setup-mips.sh builds, $(mips_dynamic_root TARGET)), into <target dir>/dynamic/.
# Run it with `scripts/qemu-cmd.sh --dynamic TARGET`, which points qemu's -L at that sysroot.
# It is position-dependent, as OpenWrt links packages unless its ASLR setting is "All"; --pie
# (with --dynamic) builds it as a PIE instead, into <target dir>/dynamic-pie/.
set -euo pipefail

# shellcheck source=scripts/mips-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/mips-common.sh"

targets=()
cargo_args=()
openwrt=0
dynamic=0
pie=0
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; cargo_args=("$@"); break ;;
    --openwrt-flags) openwrt=1; shift ;;
    --dynamic) dynamic=1; shift ;;
    --pie) pie=1; shift ;;
    -h | --help) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) mips_check_target "$1"; targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${MIPS_TARGETS[@]}")
[ "$pie" = 0 ] || [ "$dynamic" = 1 ] || mips_die "--pie goes with --dynamic (the static builds are position-dependent)"

"$MIPS_REPO_ROOT/scripts/setup-mips.sh" "${targets[@]}"

cd "$MIPS_REPO_ROOT"
export RUSTC_BOOTSTRAP=1
target_dir="${CARGO_TARGET_DIR:-$MIPS_REPO_ROOT/target}"

if [ "$openwrt" = 1 ]; then
  for t in "${targets[@]}"; do
    [[ $t == mips*musl ]] || mips_die "--openwrt-flags: OpenWrt builds the MIPS musl targets only, not $t"
  done
  # The feed's CARGO_PKG_CONFIG_VARS (lang/rust/rust-values.mk) plus the package Makefile's
  # additions. The link flags stay those of .cargo/config.toml (static, zig's musl): the
  # SDK's own toolchain links dynamically against OpenWrt's musl instead.
  target_dir="$target_dir/openwrt-flags"
  export CARGO_TARGET_DIR="$target_dir"
  export RUSTFLAGS="-Ctarget-feature=+crt-static -Clink-self-contained=no --cfg fix_y2038"
  export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
  export CARGO_PROFILE_RELEASE_DEBUG=false
  export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=false
  export CARGO_PROFILE_RELEASE_LTO=true
  export CARGO_PROFILE_RELEASE_OPT_LEVEL=s
  export CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true
  export CARGO_PROFILE_RELEASE_PANIC=abort
  export CARGO_PROFILE_RELEASE_RPATH=false
  mips_log "OpenWrt feed flags: RUSTFLAGS=$RUSTFLAGS, overflow checks on, panic=abort"
fi

if [ "$dynamic" = 1 ]; then
  [ "$openwrt" = 0 ] || mips_die "--dynamic and --openwrt-flags do not combine"
  for t in "${targets[@]}"; do
    [[ $t == mips*musl ]] || mips_die "--dynamic: the MIPS musl targets only, not $t (the gnu targets are dynamic already)"
    root="$(mips_dynamic_root "$t")"
    [ -f "$root/lib/libc.so" ] && [ -f "$root/usr/lib/libasound.so.2" ] \
      || mips_die "no dynamic sysroot for $t in $root (scripts/setup-mips.sh builds it)"
    # alsa-sys finds the shared alsa-lib through pkg-config (these override .cargo/config.toml).
    export "PKG_CONFIG_LIBDIR_${t//-/_}=$root/usr/lib/pkgconfig"
    export "PKG_CONFIG_SYSROOT_DIR_${t//-/_}=$root"
  done
  if [ "$pie" = 1 ]; then
    target_dir="$target_dir/dynamic-pie"
    export RUSTFLAGS="$MIPS_DYNAMIC_RUSTFLAGS"
  else
    target_dir="$target_dir/dynamic"
    export RUSTFLAGS="$MIPS_DYNAMIC_RUSTFLAGS $MIPS_NO_PIE_RUSTFLAGS"
  fi
  export CARGO_TARGET_DIR="$target_dir"
  export RAOPD_ZIG_DYNAMIC=1
  mips_log "dynamic: RUSTFLAGS=$RUSTFLAGS, musl libc.so + libasound.so.2"
fi

build() {
  local t0=$SECONDS t_args=() t
  for t in "$@"; do t_args+=(--target "$t"); done
  # The feed build keeps the panic strategy the package Makefile sets (abort).
  local panic_args=("${MIPS_PANIC_ARGS[@]}")
  [ "$openwrt" = 0 ] || panic_args=()
  mips_log "cargo build --release $MIPS_BUILD_STD $MIPS_BUILD_STD_FEATURES ${panic_args[*]+${panic_args[*]}} ${t_args[*]} ${cargo_args[*]+${cargo_args[*]}}"
  cargo build --release "$MIPS_BUILD_STD" "$MIPS_BUILD_STD_FEATURES" ${panic_args[@]+"${panic_args[@]}"} "${t_args[@]}" ${cargo_args[@]+"${cargo_args[@]}"}
  mips_log "built $* in $((SECONDS - t0))s"
}

t_start=$SECONDS
if [ "${MIPS_BUILD_SEPARATE:-0}" = 1 ]; then
  for t in "${targets[@]}"; do build "$t"; done
else
  build "${targets[@]}"
fi

echo
printf '%-28s %10s  %s\n' TARGET BYTES BINARY
for t in "${targets[@]}"; do
  bin="$target_dir/$t/release/raopd"
  if [ -f "$bin" ]; then
    printf '%-28s %10s  %s\n' "$t" "$(stat -c %s "$bin")" "${bin#"$MIPS_REPO_ROOT"/}"
  else
    printf '%-28s %10s  %s\n' "$t" - "no raopd binary (library-only crate so far?)"
  fi
done
mips_log "total $((SECONDS - t_start))s"
