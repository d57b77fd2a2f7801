#!/usr/bin/env bash
# Where the bytes of a MIPS raopd binary go: per ELF section, per linked library (from lld's
# link map) and per Rust crate (from the symbol table), plus the stripped size that the test
# script's budget applies to.
#
#   scripts/size-report.sh [TARGET] [-- extra cargo args]
#
# TARGET is mipsel-unknown-linux-musl (default) or mips-unknown-linux-musl (static builds,
# the ones scripts/build-mips.sh makes). The binary is built with the release profile of
# Cargo.toml, but not stripped, into <target dir>/size-report/ (so the release binary is
# left alone); the report is printed and written to <target dir>/size-report/<TARGET>.txt,
# the link map beside it (<TARGET>.map).
#
# Attribution: the Rust code of raopd, its dependencies and std is one LTO object, so the
# link map can only split Rust from the C libraries (alsa-lib, musl, libunwind,
# compiler-rt); the per-crate table splits the Rust part by the first path component of each
# demangled function name (as `cargo bloat --crates` does: generic code is counted under the
# crate that defines it, e.g. `core::ptr::drop_in_place<raopd::..>` under core). Figures are
# bytes of the unstripped file's allocated sections; the stripped file is what ships.
set -euo pipefail

# shellcheck source=scripts/mips-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/mips-common.sh"

target=mipsel-unknown-linux-musl
cargo_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; cargo_args=("$@"); break ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    mips-unknown-linux-musl | mipsel-unknown-linux-musl) target=$1; shift ;;
    *) mips_die "size-report: unknown argument '$1' (a musl target or -- cargo args)" ;;
  esac
done
case "$target" in
  mips-*) binutils=mips-linux-gnu ;;
  mipsel-*) binutils=mipsel-linux-gnu ;;
esac
for tool in nm size strip; do
  command -v "$binutils-$tool" >/dev/null || mips_die "$binutils-$tool missing (scripts/setup-mips.sh installs it)"
done

"$MIPS_REPO_ROOT/scripts/setup-mips.sh" >/dev/null 2>&1 || "$MIPS_REPO_ROOT/scripts/setup-mips.sh"
cd "$MIPS_REPO_ROOT"
out_dir="${CARGO_TARGET_DIR:-$MIPS_REPO_ROOT/target}/size-report"
name=$target
mkdir -p "$out_dir"
map="$out_dir/$name.map"
report="$out_dir/$name.txt"
bin_dir="$out_dir/$target/release"

# The link map comes from scripts/zigcc at link time; removing the binary forces the link.
rm -f "$bin_dir/raopd" "$map"
[ -d "$bin_dir/deps" ] && find "$bin_dir/deps" -maxdepth 1 -name 'raopd-*' -type f -executable -delete
mips_log "building $target (release profile, not stripped) into ${out_dir#"$MIPS_REPO_ROOT"/}"
RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$out_dir" CARGO_PROFILE_RELEASE_STRIP=false \
  RAOPD_LINK_MAP="$map" \
  cargo build --release "$MIPS_BUILD_STD" "$MIPS_BUILD_STD_FEATURES" "${MIPS_PANIC_ARGS[@]}" --target "$target" ${cargo_args[@]+"${cargo_args[@]}"}
[ -s "$map" ] || mips_die "no link map was written ($map)"
bin="$bin_dir/raopd"
"$binutils-strip" -o "$out_dir/$name.stripped" "$bin"

{
  printf 'raopd size report: %s, static, %s\n' "$target" "$(git describe --always --dirty 2>/dev/null || echo unknown)"
  printf 'stripped file: %d bytes (%d KiB); unstripped: %d bytes\n\n' \
    "$(stat -c %s "$out_dir/$name.stripped")" "$(( $(stat -c %s "$out_dir/$name.stripped") / 1024 ))" \
    "$(stat -c %s "$bin")"

  python3 "$MIPS_REPO_ROOT/scripts/size-report.py" "$bin" "$map" "$binutils"
} | tee "$report"
mips_log "report: ${report#"$MIPS_REPO_ROOT"/}; link map: ${map#"$MIPS_REPO_ROOT"/}"
