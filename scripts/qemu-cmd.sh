#!/usr/bin/env bash
# Print the command prefix that runs a binary of the given MIPS target under qemu-user, e.g.
#
#   RAOPD_CMD="$(scripts/qemu-cmd.sh mips-unknown-linux-musl) target/mips-unknown-linux-musl/release/raopd"
#   $(scripts/qemu-cmd.sh mipsel-unknown-linux-gnu) target/mipsel-unknown-linux-gnu/release/raopd --version
#
# Output is one line of words without quoting (no paths with spaces), meant for word splitting.
# Keep in sync with the `runner` entries in .cargo/config.toml.
#   *-musl   static binaries; -cpu 24Kc is the FPU-less core of ath79/ramips boards, so a stray
#            hard-float instruction shows up as SIGILL here rather than on the router
#   mips-gnu dynamic, glibc from Debian's cross sysroot /usr/mips-linux-gnu
#   mipsel-gnu dynamic, multiarch: -L / finds /lib/ld.so.1 and /usr/lib/mipsel-linux-gnu
#            (libasound2:mipsel); -L /usr/mipsel-linux-gnu crashes in pthread_create
#   --dynamic *-musl  the OpenWrt-style dynamic builds (scripts/build-mips.sh --dynamic): -L at
#            the target's dynamic sysroot, which holds musl's loader /lib/ld-musl-*-sf.so.1 and
#            /usr/lib/libasound.so.2, e.g.
#   RAOPD_CMD="$(scripts/qemu-cmd.sh --dynamic mipsel-unknown-linux-musl) target/dynamic/mipsel-unknown-linux-musl/release/raopd"
# Unless ALSA_CONFIG_PATH is already set, the guest gets ALSA_CONFIG_PATH=<cache>/alsa-qemu.conf
# (Debian's alsa.conf minus the /etc/alsa/conf.d hooks; written by scripts/setup-mips.sh): the
# host's hooks, e.g. the pulse one, need plugins that the MIPS alsa-lib cannot load, and then
# every PCM, even null or file:FILE=..., is "unknown".
set -euo pipefail

# shellcheck source=scripts/mips-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/mips-common.sh"

dynamic=0
if [ "${1:-}" = --dynamic ]; then
  dynamic=1
  shift
fi
if [ $# -ne 1 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
  echo "usage: $0 [--dynamic] TARGET   (mips-unknown-linux-gnu, mipsel-unknown-linux-gnu, mips-unknown-linux-musl, mipsel-unknown-linux-musl; --dynamic: musl only)" >&2
  exit 2
fi

case "$1" in
  mips-unknown-linux-gnu) cmd=(qemu-mips -L /usr/mips-linux-gnu) ;;
  mipsel-unknown-linux-gnu) cmd=(qemu-mipsel -L /) ;;
  mips-unknown-linux-musl | mips-unknown-linux-uclibc) cmd=(qemu-mips -cpu 24Kc) ;;
  mipsel-unknown-linux-musl | mipsel-unknown-linux-uclibc) cmd=(qemu-mipsel -cpu 24Kc) ;;
  *) echo "$0: unknown target '$1'" >&2; exit 2 ;;
esac

if [ "$dynamic" = 1 ]; then
  case "$1" in
    *-musl) ;;
    *) echo "$0: --dynamic is for the musl targets, not $1" >&2; exit 2 ;;
  esac
  root="$(mips_dynamic_root "$1")"
  if [ ! -e "$root/lib/$(mips_musl_loader "$1")" ] || [ ! -e "$root/usr/lib/libasound.so.2" ]; then
    echo "$0: no dynamic sysroot for $1 in $root; run scripts/setup-mips.sh" >&2
    exit 1
  fi
  case "$root" in
    *[[:space:]]*) echo "$0: $root has spaces; set RAOPD_MIPS_CACHE to a path without" >&2; exit 1 ;;
  esac
  cmd+=(-L "$root")
fi
if ! command -v "${cmd[0]}" >/dev/null; then
  echo "$0: ${cmd[0]} not found; run scripts/setup-mips.sh" >&2
  exit 1
fi
if [ "$1" = mips-unknown-linux-gnu ] && [ ! -e /usr/mips-linux-gnu/lib/ld.so.1 ]; then
  echo "$0: /usr/mips-linux-gnu/lib/ld.so.1 missing (libc6-mips-cross); run scripts/setup-mips.sh" >&2
  exit 1
fi
alsa_conf="$MIPS_CACHE/alsa-qemu.conf"
if [ -z "${ALSA_CONFIG_PATH:-}" ] && [ -f "$alsa_conf" ]; then
  case "$alsa_conf" in
    *[[:space:]]*) echo "$0: warning: not passing $alsa_conf (path has spaces)" >&2 ;;
    *) cmd+=(-E "ALSA_CONFIG_PATH=$alsa_conf") ;;
  esac
fi
echo "${cmd[*]}"
