#!/usr/bin/env bash
# Installs what building raopd needs on a fresh Debian 12, as root: the C toolchain and ALSA
# headers (alsa-sys), alsa-utils (aplay, to list and test sound cards) and Rust. Idempotent.
#
# Rust: Debian 12's own rustc (1.63) is older than the crate's rust-version and Debian 12 has
# no rustup package, so when cargo is missing or too old this installs the stable toolchain
# with the official rustup installer (https://sh.rustup.rs, into ~/.cargo and ~/.rustup, minimal
# profile). Afterwards cargo is in ~/.cargo/bin: `. ~/.cargo/env`, or log in again.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
APT_PACKAGES=(build-essential pkg-config libasound2-dev alsa-utils curl ca-certificates)

if [ "$(id -u)" != 0 ]; then
  echo "setup-build.sh: run as root (it installs Debian packages)" >&2
  exit 2
fi

# shellcheck source=scripts/apt-install.sh
. "$repo/scripts/apt-install.sh"
apt_install setup-build "${APT_PACKAGES[@]}"

need=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$repo/Cargo.toml")
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
have=$(cargo --version 2>/dev/null | awk '{print $2}' || true)
# True when version $1 >= $2 (numeric, dot-separated).
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }
if [ -n "$have" ] && version_ge "${have%%-*}" "$need"; then
  echo "setup-build: cargo $have (crate needs $need or newer)"
elif command -v rustup >/dev/null; then
  echo "setup-build: cargo ${have:-missing}, crate needs $need: rustup update stable"
  rustup toolchain install stable --profile minimal
  rustup default stable
else
  echo "setup-build: cargo ${have:-missing}, crate needs $need: installing Rust with rustup"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  export PATH="$HOME/.cargo/bin:$PATH"
fi
have=$(cargo --version | awk '{print $2}')
version_ge "${have%%-*}" "$need" || {
  echo "setup-build: $(command -v cargo) is $have, still older than $need; is another cargo first on PATH?" >&2
  exit 2
}
echo "setup-build: ready: $(command -v cargo) $have"
