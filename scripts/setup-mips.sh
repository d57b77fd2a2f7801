#!/usr/bin/env bash
# Prepare a Debian 12 (bookworm) machine for raopd's MIPS builds and qemu-user tests.
#
#   sudo scripts/setup-mips.sh        # full setup (root needed only for the apt part)
#
# Idempotent: every step checks whether its result is already there, so a re-run on a set-up
# machine takes about a second. What it provides:
#   * Debian cross compilers gcc-mips-linux-gnu / gcc-mipsel-linux-gnu (linkers for the gnu
#     targets, sysroot /usr/mips-linux-gnu for qemu-mips)
#   * qemu-user (qemu-mips, qemu-mipsel)
#   * libasound2-dev:mipsel (multiarch) for mipsel-unknown-linux-gnu
#   * the rust-src component (MIPS targets are tier 3: std is built with -Z build-std)
#   * zig (PyPI `ziglang` wheel in a venv) as C compiler and linker for the musl targets
#   * static alsa-lib, built from Debian's own source package, for mips-unknown-linux-gnu
#     (Debian has no big-endian `mips` port any more) and for both musl targets
#   * alsa-qemu.conf: Debian's alsa.conf without the conf.d hooks, for binaries under qemu
# Built artefacts go to $RAOPD_MIPS_CACHE (default ~/.cache/raopd-mips) and are reached
# through the symlink target/mips-sysroot, which is re-created when missing (fresh clone,
# `cargo clean`). See docs/mips.md.
set -euo pipefail

# shellcheck source=scripts/mips-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/mips-common.sh"

JOBS="${JOBS:-$(nproc)}"

# ---------------------------------------------------------------------------------------------
# 1. Debian packages (root)
# ---------------------------------------------------------------------------------------------
APT_PACKAGES=(
  gcc-mips-linux-gnu gcc-mipsel-linux-gnu libc6-dev-mips-cross libc6-dev-mipsel-cross
  qemu-user
  libasound2-dev:mipsel
  pkg-config make dpkg-dev xz-utils file ca-certificates
)

apt_missing() {
  local p missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${db:Status-Status}\n' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
  done
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then missing+=(python3-venv); fi
  if ! command -v python3 >/dev/null; then missing+=(python3); fi
  echo "${missing[*]}"
}

# deb-src lines are needed for `apt-get source alsa-lib`.
have_deb_src() {
  grep -rhsE '^[[:space:]]*(deb-src[[:space:]]|Types:.*deb-src)' \
    /etc/apt/sources.list /etc/apt/sources.list.d/ >/dev/null
}

enable_deb_src() {
  local f=/etc/apt/sources.list.d/raopd-deb-src.sources
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    # deb822 (default on Debian 12): same entries, deb-src type.
    sed -E 's/^Types:.*/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$f"
  elif grep -qsE '^deb[[:space:]]' /etc/apt/sources.list; then
    f=/etc/apt/sources.list.d/raopd-deb-src.list
    grep -E '^deb[[:space:]]' /etc/apt/sources.list | grep -v -- '-security' \
      | sed -E 's/^deb[[:space:]]/deb-src /' > "$f"
  else
    mips_die "cannot find Debian apt sources to derive deb-src entries from"
  fi
  mips_log "enabled source packages in $f"
}

setup_apt() {
  local need_src=0 missing
  missing="$(apt_missing)"
  [ -d "$MIPS_CACHE/src" ] && ls -d "$MIPS_CACHE"/src/alsa-lib-*/ >/dev/null 2>&1 || need_src=1
  if [ -z "$missing" ] && { [ "$need_src" = 0 ] || have_deb_src; }; then
    mips_log "Debian packages: already installed"
    return
  fi
  [ "$(id -u)" = 0 ] || mips_die "missing Debian packages or deb-src entries (${missing:-none missing}); re-run as root"
  export DEBIAN_FRONTEND=noninteractive
  if ! dpkg --print-foreign-architectures | grep -qx mipsel; then
    mips_log "adding dpkg architecture mipsel"
    dpkg --add-architecture mipsel
  fi
  have_deb_src || enable_deb_src
  mips_log "apt-get update"
  apt-get update -qq
  missing="$(apt_missing)"
  if [ -n "$missing" ]; then
    mips_log "installing: $missing"
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
}

# ---------------------------------------------------------------------------------------------
# 2. Rust: rust-src for -Z build-std
# ---------------------------------------------------------------------------------------------
setup_rust() {
  local src
  src="$(rustc --print sysroot)/lib/rustlib/src/rust/library"
  if [ -d "$src/std" ]; then
    mips_log "rust-src: present ($(rustc --version))"
    return
  fi
  command -v rustup >/dev/null || mips_die "rust-src is missing and rustup is not available"
  mips_log "rustup component add rust-src"
  # Adds the component to the toolchain in use; does not update the toolchain.
  rustup component add rust-src
}

# ---------------------------------------------------------------------------------------------
# 3. Cache dir and the target/mips-sysroot link
# ---------------------------------------------------------------------------------------------
setup_cache_link() {
  mkdir -p "$MIPS_CACHE" "$MIPS_REPO_ROOT/target"
  local want have
  want="$(cd "$MIPS_CACHE" && pwd -P)"
  if [ -L "$MIPS_SYSROOT_LINK" ] || [ ! -e "$MIPS_SYSROOT_LINK" ]; then
    have="$(readlink "$MIPS_SYSROOT_LINK" 2>/dev/null || true)"
    if [ "$have" != "$want" ]; then
      ln -sfn "$want" "$MIPS_SYSROOT_LINK"
      mips_log "linked target/mips-sysroot -> $want"
    fi
  elif [ "$(cd "$MIPS_SYSROOT_LINK" && pwd -P)" != "$want" ]; then
    mips_die "$MIPS_SYSROOT_LINK is a directory, not a link to $want; remove it or set RAOPD_MIPS_CACHE=$MIPS_SYSROOT_LINK"
  fi
}

# ---------------------------------------------------------------------------------------------
# 4. zig (musl C compiler + linker) from PyPI
# ---------------------------------------------------------------------------------------------
setup_zig() {
  local venv="$MIPS_CACHE/zig-venv" zig
  if [ -x "$MIPS_CACHE/bin/zig" ] && [ "$("$MIPS_CACHE/bin/zig" version)" = "$MIPS_ZIG_VERSION" ]; then
    mips_log "zig: $MIPS_ZIG_VERSION present"
    return
  fi
  mips_log "installing zig $MIPS_ZIG_VERSION (PyPI ziglang) into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "ziglang==$MIPS_ZIG_VERSION"
  zig="$("$venv/bin/python" -c 'import ziglang, os; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')"
  [ -x "$zig" ] || mips_die "zig binary not found in the ziglang wheel ($zig)"
  mkdir -p "$MIPS_CACHE/bin"
  ln -sfn "$zig" "$MIPS_CACHE/bin/zig"
  mips_log "zig $("$MIPS_CACHE/bin/zig" version) ready"
}

# Build zig's musl libc / compiler_rt / libunwind for both musl targets once, so that the
# first cargo link does not pay for it.
warm_zig() {
  local t stamp="$MIPS_CACHE/zig-cache/.warm-$MIPS_ZIG_VERSION" tmp
  [ -f "$stamp" ] && return
  tmp="$(mktemp -d)"
  printf '#include <stdio.h>\nint main(void){puts("ok");return 0;}\n' > "$tmp/hello.c"
  for t in mips-unknown-linux-musl mipsel-unknown-linux-musl; do
    mips_log "zig: building musl libc for $t (one-off)"
    "$MIPS_REPO_ROOT/scripts/zigcc" "$(mips_zig_target "$t")" -static -Os "$tmp/hello.c" -o "$tmp/hello-$t" -lunwind
  done
  rm -rf "$tmp"
  touch "$stamp"
}

# ---------------------------------------------------------------------------------------------
# 5. alsa-lib from Debian's source package
# ---------------------------------------------------------------------------------------------
alsa_src_dir() { ls -d "$MIPS_CACHE"/src/alsa-lib-*/ 2>/dev/null | head -n1; }

fetch_alsa_src() {
  if [ -n "$(alsa_src_dir)" ]; then return; fi
  mkdir -p "$MIPS_CACHE/src"
  mips_log "apt-get source alsa-lib"
  (cd "$MIPS_CACHE/src" && apt-get source -qq alsa-lib >/dev/null 2>&1) \
    || mips_die "apt-get source alsa-lib failed (deb-src entries missing? run as root once)"
  [ -n "$(alsa_src_dir)" ] || mips_die "alsa-lib source was not unpacked"
}

build_alsa() {
  local target="$1" host cc ar ranlib src build root stamp_val ver
  case "$target" in
    mips-unknown-linux-gnu)
      host=mips-linux-gnu; cc=mips-linux-gnu-gcc; ar=mips-linux-gnu-ar; ranlib=mips-linux-gnu-ranlib ;;
    mips-unknown-linux-musl)
      host=mips-linux-musl; cc="$MIPS_REPO_ROOT/scripts/zigcc-mips-musl"; ar=mips-linux-gnu-ar; ranlib=mips-linux-gnu-ranlib ;;
    mipsel-unknown-linux-musl)
      host=mipsel-linux-musl; cc="$MIPS_REPO_ROOT/scripts/zigcc-mipsel-musl"; ar=mipsel-linux-gnu-ar; ranlib=mipsel-linux-gnu-ranlib ;;
    *) mips_die "no alsa-lib build for $target" ;;
  esac
  src="$(alsa_src_dir)"
  ver="$(basename "$src")"
  root="$(mips_alsa_root "$target")"
  stamp_val="$ver rev$MIPS_ALSA_BUILD_REV zig$MIPS_ZIG_VERSION"
  if [ -f "$root/.stamp" ] && [ "$(cat "$root/.stamp")" = "$stamp_val" ]; then
    mips_log "alsa-lib for $target: cached ($ver)"
    return
  fi
  build="$MIPS_CACHE/build/$target"
  rm -rf "$build" "$root"
  mkdir -p "$build"
  mips_log "alsa-lib for $target: configure ($ver, CC=$(basename "$cc"))"
  # Slim static alsa-lib: what raopd calls (PCM, control, mixer, config parsing) and the PCM
  # plugins that card configurations and users name for playback (docs/mips.md). No rawmidi,
  # seq, hwdep (the alsa crate binds them, raopd does not use them), UCM, topology, alisp,
  # python, old versioned symbols, capture-only or exotic PCM plugins, control plugins.
  (cd "$build" && CC="$cc" AR="$ar" RANLIB="$ranlib" CFLAGS="-Os -g0 -fno-unwind-tables -fno-asynchronous-unwind-tables" \
    "$src/configure" --host="$host" --build="$(uname -m)-linux-gnu" \
      --prefix=/usr --libdir=/usr/lib --sysconfdir=/etc \
      --with-configdir=/usr/share/alsa --with-plugindir=/usr/lib/alsa-lib \
      --enable-static --disable-shared --disable-dependency-tracking \
      --disable-python --disable-alisp --disable-ucm --disable-topology \
      --disable-old-symbols --with-versioned=no --with-debug=no \
      --disable-rawmidi --disable-seq --disable-hwdep --disable-aload \
      --with-pcm-plugins="$MIPS_ALSA_PCM_PLUGINS" --with-ctl-plugins=no \
      > configure.log 2>&1) || { tail -n 40 "$build/configure.log" >&2; mips_die "alsa-lib configure failed for $target (log: $build/configure.log)"; }
  mips_log "alsa-lib for $target: make -j$JOBS"
  (cd "$build" && make -j"$JOBS" -C include > make.log 2>&1 && make -j"$JOBS" -C src >> make.log 2>&1 \
    && make -C include install DESTDIR="$root" >> make.log 2>&1 \
    && make -C src install DESTDIR="$root" >> make.log 2>&1 \
    && make -C utils install DESTDIR="$root" >> make.log 2>&1) \
    || { tail -n 40 "$build/make.log" >&2; mips_die "alsa-lib build failed for $target (log: $build/make.log)"; }
  [ -f "$root/usr/lib/libasound.a" ] && [ -f "$root/usr/lib/pkgconfig/alsa.pc" ] \
    || mips_die "alsa-lib install for $target is incomplete"
  rm -rf "$build"
  echo "$stamp_val" > "$root/.stamp"
  mips_log "alsa-lib for $target: installed in $root"
}

# ---------------------------------------------------------------------------------------------
# 6. ALSA configuration for MIPS binaries under qemu-user
# ---------------------------------------------------------------------------------------------
# Debian's alsa.conf without its top-level @hooks, which load /etc/alsa/conf.d and
# ~/.asoundrc. Those may reference plugins (e.g. libasound2-plugins' pulse hook) that a static
# or foreign-arch alsa-lib cannot dlopen, making every PCM lookup fail. scripts/qemu-cmd.sh
# passes this file to the guest as ALSA_CONFIG_PATH.
setup_alsa_qemu_conf() {
  local src=/usr/share/alsa/alsa.conf dst="$MIPS_CACHE/alsa-qemu.conf"
  [ -f "$src" ] || mips_die "$src missing (package libasound2-data)"
  if [ -f "$dst" ] && [ "$dst" -nt "$src" ]; then return; fi
  awk '/^@hooks[ \t]*\[/ { skip = 1; next } skip && /^\]/ { skip = 0; next } !skip' "$src" > "$dst.tmp"
  grep -q '^pcm\.null' "$dst.tmp" || mips_die "unexpected $src layout (no pcm.null)"
  mv "$dst.tmp" "$dst"
  mips_log "wrote $dst (alsa.conf without conf.d hooks)"
}

# ---------------------------------------------------------------------------------------------
main() {
  local t0=$SECONDS
  setup_apt
  setup_rust
  setup_cache_link
  setup_zig
  warm_zig
  fetch_alsa_src
  build_alsa mips-unknown-linux-gnu
  build_alsa mips-unknown-linux-musl
  build_alsa mipsel-unknown-linux-musl
  setup_alsa_qemu_conf
  command -v qemu-mips >/dev/null && command -v qemu-mipsel >/dev/null || mips_die "qemu-mips/qemu-mipsel missing"
  mips_log "MIPS setup complete in $((SECONDS - t0))s (cache: $MIPS_CACHE)"
}

main "$@"
