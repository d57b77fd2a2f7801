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
# Unless ALSA_CONFIG_PATH is already set, the guest gets ALSA_CONFIG_PATH=<cache>/alsa-qemu.conf
# (Debian's alsa.conf minus the /etc/alsa/conf.d hooks; written by scripts/setup-mips.sh): the
# host's hooks, e.g. the pulse one, need plugins that the MIPS alsa-lib cannot load, and then
# every PCM, even null or file:FILE=..., is "unknown".
set -euo pipefail

# shellcheck source=scripts/mips-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/mips-common.sh"

if [ $# -ne 1 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
  echo "usage: $0 TARGET   (mips-unknown-linux-gnu, mipsel-unknown-linux-gnu, mips-unknown-linux-musl, mipsel-unknown-linux-musl)" >&2
  exit 2
fi

case "$1" in
  mips-unknown-linux-gnu) cmd=(qemu-mips -L /usr/mips-linux-gnu) ;;
  mipsel-unknown-linux-gnu) cmd=(qemu-mipsel -L /) ;;
  mips-unknown-linux-musl | mips-unknown-linux-uclibc) cmd=(qemu-mips -cpu 24Kc) ;;
  mipsel-unknown-linux-musl | mipsel-unknown-linux-uclibc) cmd=(qemu-mipsel -cpu 24Kc) ;;
  *) echo "$0: unknown target '$1'" >&2; exit 2 ;;
esac

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
