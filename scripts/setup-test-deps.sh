#!/usr/bin/env bash
# Installs what `cargo test` needs on Debian 12, as root: the C toolchain and ALSA headers to
# build raopd, the real RAOP senders the end-to-end tests drive (PulseAudio's module-raop-sink,
# PipeWire's libpipewire-module-raop-sink and pyatv), the tools that build the tests' private
# network (iproute2, nftables, dbus, avahi), and cargo's clippy and rustfmt. Idempotent: it installs only what is missing, so scripts/test.sh
# calls it on every run.
#
#   scripts/setup-test-deps.sh [EXTRA-APT-PACKAGE...]
#
# Extra arguments are further Debian packages to install the same way (scripts/bench.sh adds its
# tools: shairport-sync, perf, strace).
#
# pyatv (with zeroconf, for the mDNS tests) lives in a venv at
# ${CARGO_TARGET_DIR:-target}/test-env/venv; the tests look for it there (or in $RAOPD_TEST_VENV).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

PYATV_VERSION=0.18.0
APT_PACKAGES=(
  build-essential pkg-config libasound2-dev             # build raopd (alsa-sys)
  pulseaudio pulseaudio-utils pulseaudio-module-raop    # sender: module-raop-sink, paplay, pactl
  pipewire pipewire-bin libpipewire-0.3-modules         # sender: libpipewire-module-raop-sink,
  libspa-0.2-modules                                    #   pw-cat, pw-link (no session manager)
  python3 python3-venv                                  # sender: pyatv in a venv
  iproute2 nftables procps                              # namespaces, packet loss, ss/kill
  tcpdump                                               # wire capture for the absolute-timing test
  dbus avahi-daemon avahi-utils                         # mDNS peers inside a namespace
  ffmpeg sox                                            # test audio by hand; sox also pads PipeWire's input
  busybox                                               # OpenWrt's shell for the init script test
  nodejs                                                # node --check on the LuCI view
  chromium chromium-driver                              # the LuCI page test in a real browser
  qemu-system-mips cpio kmod xz-utils                   # the firmware-image test (qemu-system-mipsel)
  ca-certificates coreutils
)
APT_PACKAGES+=("$@")

if [ "$(id -u)" != 0 ]; then
  echo "setup-test-deps.sh: must run as root (apt-get, network namespaces)" >&2
  exit 2
fi

# shellcheck source=scripts/apt-install.sh
. "$repo/scripts/apt-install.sh"
apt_install setup-test-deps "${APT_PACKAGES[@]}"

# Rust (with rustup when cargo is missing or older than the crate's rust-version), the ALSA
# headers and alsa-utils: the same script the README's build command runs.
bash "$repo/scripts/setup-build.sh"
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
for c in clippy rustfmt; do
  sub=$c; [ $c = rustfmt ] && sub=fmt
  if ! cargo "$sub" --version >/dev/null 2>&1; then
    command -v rustup >/dev/null || { echo "setup-test-deps: cargo $sub missing and no rustup" >&2; exit 2; }
    rustup component add "$c"
  fi
done

target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$repo/$target ;; esac
venv=$target/test-env/venv
check_venv() {
  "$venv/bin/python" - 2>/dev/null <<PYEOF
import importlib.metadata as m
assert m.version("pyatv") == "$PYATV_VERSION"
import pyatv, zeroconf
PYEOF
}
if [ -x "$venv/bin/python" ] && check_venv; then
  echo "setup-test-deps: venv $venv ok (pyatv $PYATV_VERSION)"
else
  echo "setup-test-deps: creating venv $venv (pyatv $PYATV_VERSION)"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  # Debian's python3: the venv must not depend on whatever other Python is first on PATH.
  py=/usr/bin/python3
  [ -x "$py" ] || py=python3
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "pyatv==$PYATV_VERSION" zeroconf
  check_venv || { echo "setup-test-deps: venv check failed" >&2; exit 1; }
fi
