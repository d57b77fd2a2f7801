# shellcheck shell=bash
# Shared settings for the MIPS scripts (scripts/setup-mips.sh, scripts/build-mips.sh,
# scripts/qemu-cmd.sh, scripts/zigcc-*). Source it; do not run it.
#
# Layout
#   $MIPS_CACHE                      persistent cache, survives `cargo clean` and fresh clones
#     (default ${XDG_CACHE_HOME:-$HOME/.cache}/raopd-mips, override with RAOPD_MIPS_CACHE)
#     zig-venv/                      Python venv holding the `ziglang` wheel (zig cc = musl linker)
#     bin/zig                        symlink to the zig binary inside the venv
#     zig-cache/                     zig's global cache (its prebuilt musl libc.a etc.)
#     src/                           Debian's alsa-lib source package (apt-get source)
#     build/<target>/                alsa-lib build trees
#     alsa-r<rev>-<rust-target>/usr/ alsa-lib installs (DESTDIR), static libasound.a + alsa.pc
#                                    (<rev> = MIPS_ALSA_BUILD_REV: checkouts of different
#                                    revisions share the cache without rebuilding each other's)
#     dynamic-<rust-target>/         sysroot of the dynamic (OpenWrt-style) musl builds and of
#                                    qemu's -L: lib/libc.so + lib/ld-musl-*-sf.so.1 (musl
#                                    built with zig cc), usr/lib/libasound.so* + alsa.pc
#   <repo>/target/mips-sysroot       symlink to $MIPS_CACHE; .cargo/config.toml and the zig
#                                    wrappers find everything through it

MIPS_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MIPS_CACHE="${RAOPD_MIPS_CACHE:-${XDG_CACHE_HOME:-${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.cache}/raopd-mips}"
MIPS_SYSROOT_LINK="$MIPS_REPO_ROOT/target/mips-sysroot"

# The four targets that CI builds and tests.
MIPS_TARGETS=(mips-unknown-linux-gnu mipsel-unknown-linux-gnu mips-unknown-linux-musl mipsel-unknown-linux-musl)
# Not MIPS, not built by default: the firmware build's settings (static musl, zig, slim static
# alsa-lib, build-std with panic_abort) on the host's architecture, to measure natively what
# qemu-user only emulates (memory use, speed). `scripts/build-mips.sh x86_64-unknown-linux-musl`.
MIPS_HOST_TARGET=x86_64-unknown-linux-musl

# zig from PyPI (`ziglang` wheel) is the C compiler/linker for the musl targets.
MIPS_ZIG_VERSION="${RAOPD_ZIG_VERSION:-0.15.2}"

# Bump when the alsa-lib configure flags change; it names the install directory, so the
# paths in .cargo/config.toml ([env]) must follow.
MIPS_ALSA_BUILD_REV=4

# alsa-lib's PCM plugins built in (configure --with-pcm-plugins; hw is always there).
# Playback through hw/plughw and what the stock card configurations of alsa-lib use for their
# default/front/surround/iec958 devices (asym, dmix, softvol, route, rate, multi, hooks,
# empty, iec958), plus null and file (the tests). Left out: capture-only (dsnoop), formats
# raopd never produces (mulaw, alaw, adpcm, lfloat), shm/share/dshare, meter, ladspa,
# ioplug/extplug (external plugins need dlopen, which a static binary cannot do) and
# mmap_emul.
MIPS_ALSA_PCM_PLUGINS="plug,linear,copy,route,rate,multi,null,file,empty,hooks,dmix,asym,iec958,softvol"

# Flags for rustc's -Z build-std (MIPS targets are tier 3: no prebuilt std).
# The release builds do not unwind (the release profile aborts on a panic, the firmware builds
# below abort at once): std is built the same way, and the links drop the unwinding tables
# nothing reads then (scripts/zigcc).
MIPS_BUILD_STD="-Zbuild-std=std,panic_abort"
export RAOPD_ZIG_NO_EH_FRAME=1
# std's features: size-optimised algorithms (optimize_for_size), and no `backtrace`
# feature, whose symboliser (gimli, addr2line, miniz_oxide, rustc-demangle) cost 257 KiB on
# mipsel-musl.
MIPS_BUILD_STD_FEATURES="-Zbuild-std-features=optimize_for_size"
# The firmware builds (scripts/build-mips.sh but --openwrt-flags, size-report.sh,
# build-image.sh) go one step further than the release profile's `panic = "abort"`: raopd and
# std with `panic = "immediate-abort"` (unstable, hence -Zpanic-immediate-abort): a panic is a
# trap instruction, and std's panic machinery (message formatting, the panic hook, backtrace
# capture and the unwinder it links) leaves the binary: 116,120 bytes of the static mipsel-musl
# one.
# A panic then ends the daemon without its message; src/fatal.rs writes the signal's name to
# the log instead (README "No unwinding").
MIPS_PANIC_ARGS=(-Zpanic-immediate-abort --config 'profile.release.panic="immediate-abort"')

# rustflags of the dynamic (OpenWrt-style) musl builds, in place of the static ones of
# .cargo/config.toml (scripts/build-mips.sh --dynamic passes them as RUSTFLAGS): no crt-static
# (dynamic musl, dynamic alsa-lib), the same -Zlocation-detail=none and fix_y2038 cfg
# (docs/mips.md, "Timer hang"). Position-dependent code unless --pie: OpenWrt links its
# packages as PIEs only when its "User space ASLR PIE compilation" setting asks for it
# (include/hardening.mk: "All", or "Regular" for the packages that opt in, which
# shairport-sync and raopd do not); the package Makefile follows the setting (README "Linked
# like OpenWrt"). MIPS PIC code costs 99 KiB of this binary.
MIPS_DYNAMIC_RUSTFLAGS="-Ctarget-feature=-crt-static -Clink-self-contained=no -Zlocation-detail=none --cfg fix_y2038"
MIPS_NO_PIE_RUSTFLAGS="-Crelocation-model=static"

mips_log() { printf '\033[1;34m[mips]\033[0m %s\n' "$*" >&2; }
mips_die() { printf '\033[1;31m[mips] error:\033[0m %s\n' "$*" >&2; exit 1; }

mips_check_target() {
  case "$1" in
    mips-unknown-linux-gnu|mipsel-unknown-linux-gnu|mips-unknown-linux-musl|mipsel-unknown-linux-musl) ;;
    "$MIPS_HOST_TARGET") ;;
    *) mips_die "unknown target '$1' (expected one of: ${MIPS_TARGETS[*]} $MIPS_HOST_TARGET)" ;;
  esac
}

# zig's target triple for a Rust musl target. Rust's mips*-unknown-linux-musl targets are
# soft-float mips32r2 (OpenWrt's ABI), which zig calls "musleabi".
mips_zig_target() {
  case "$1" in
    mips-unknown-linux-musl) echo mips-linux-musleabi ;;
    mipsel-unknown-linux-musl) echo mipsel-linux-musleabi ;;
    x86_64-unknown-linux-musl) echo x86_64-linux-musl ;;
    *) mips_die "no zig target for $1" ;;
  esac
}

# Bump when the dynamic sysroot (musl libc.so, shared alsa-lib) changes, so that it is redone.
MIPS_DYNAMIC_BUILD_REV=1

# Where a target's alsa-lib lives (DESTDIR root; the .pc file is under usr/lib/pkgconfig).
# mipsel-unknown-linux-gnu uses Debian's multiarch libasound2-dev:mipsel instead.
mips_alsa_root() { echo "$MIPS_CACHE/alsa-r$MIPS_ALSA_BUILD_REV-$1"; }

# The sysroot of a musl target's dynamic build (scripts/build-mips.sh --dynamic): musl's
# libc.so (also the dynamic loader) and a shared alsa-lib, as an OpenWrt image has them.
# qemu-user runs the dynamic binaries with `-L` pointing here.
mips_dynamic_root() { echo "$MIPS_CACHE/dynamic-$1"; }

# musl's dynamic loader name for a soft-float Rust musl target (PT_INTERP of the binaries).
mips_musl_loader() {
  case "$1" in
    mips-unknown-linux-musl) echo ld-musl-mips-sf.so.1 ;;
    mipsel-unknown-linux-musl) echo ld-musl-mipsel-sf.so.1 ;;
    *) mips_die "no musl loader for $1" ;;
  esac
}
