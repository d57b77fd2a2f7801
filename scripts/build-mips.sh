#!/usr/bin/env bash
# Build raopd (release profile) for the MIPS targets and print the binary sizes.
#
#   scripts/build-mips.sh                          # all four targets
#   scripts/build-mips.sh mips-unknown-linux-musl  # one or more targets
#   scripts/build-mips.sh TARGET... -- --no-default-features   # extra cargo build args
#
# Targets: mips-unknown-linux-gnu, mipsel-unknown-linux-gnu (Debian cross gcc, glibc, for
# tests), mips-unknown-linux-musl, mipsel-unknown-linux-musl (static, soft-float, for OpenWrt
# ath79 / ramips). Settings (linker, rustflags, pkg-config) live in .cargo/config.toml; this
# script adds what cannot live there: RUSTC_BOOTSTRAP=1 and -Zbuild-std (tier-3 targets).
# Runs scripts/setup-mips.sh first, which is a no-op (about a second) once set up.
# Honours CARGO_TARGET_DIR. Env: MIPS_BUILD_SEPARATE=1 builds the targets one cargo run at a
# time (per-target timings) instead of in one run (better use of both cores during LTO).
set -euo pipefail

# shellcheck source=scripts/mips-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/mips-common.sh"

targets=()
cargo_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; cargo_args=("$@"); break ;;
    -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) mips_check_target "$1"; targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${MIPS_TARGETS[@]}")

"$MIPS_REPO_ROOT/scripts/setup-mips.sh"

cd "$MIPS_REPO_ROOT"
export RUSTC_BOOTSTRAP=1
target_dir="${CARGO_TARGET_DIR:-$MIPS_REPO_ROOT/target}"

build() {
  local t0=$SECONDS t_args=() t
  for t in "$@"; do t_args+=(--target "$t"); done
  mips_log "cargo build --release $MIPS_BUILD_STD ${t_args[*]} ${cargo_args[*]+${cargo_args[*]}}"
  cargo build --release "$MIPS_BUILD_STD" "${t_args[@]}" ${cargo_args[@]+"${cargo_args[@]}"}
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
