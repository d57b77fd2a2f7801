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
#   * the sysroot of the dynamic (OpenWrt-style) musl builds, per musl target: musl's libc.so
#     (Debian's musl source package built with zig cc, soft-float) and a shared alsa-lib
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

# deb-src lines are needed for `apt-get source alsa-lib` and `apt-get source musl`.
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
  ls -d "$MIPS_CACHE"/src/musl-*/ >/dev/null 2>&1 || need_src=1
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

# build_alsa TARGET [shared]: static libasound.a into $(mips_alsa_root TARGET), or with
# `shared` libasound.so into the target's dynamic sysroot (same configuration otherwise).
build_alsa() {
  local target="$1" kind="${2:-static}" host cc ar ranlib src build root stamp_val ver
  local link_flags=(--enable-static --disable-shared)
  case "$target" in
    mips-unknown-linux-gnu)
      host=mips-linux-gnu; cc=mips-linux-gnu-gcc; ar=mips-linux-gnu-ar; ranlib=mips-linux-gnu-ranlib ;;
    mips-unknown-linux-musl)
      host=mips-linux-musl; cc="$MIPS_REPO_ROOT/scripts/zigcc-mips-musl"; ar=mips-linux-gnu-ar; ranlib=mips-linux-gnu-ranlib ;;
    mipsel-unknown-linux-musl)
      host=mipsel-linux-musl; cc="$MIPS_REPO_ROOT/scripts/zigcc-mipsel-musl"; ar=mipsel-linux-gnu-ar; ranlib=mipsel-linux-gnu-ranlib ;;
    x86_64-unknown-linux-musl)
      host=x86_64-linux-musl; cc="$MIPS_REPO_ROOT/scripts/zigcc-x86_64-musl"; ar=x86_64-linux-gnu-ar; ranlib=x86_64-linux-gnu-ranlib ;;
    *) mips_die "no alsa-lib build for $target" ;;
  esac
  src="$(alsa_src_dir)"
  ver="$(basename "$src")"
  root="$(mips_alsa_root "$target")"
  stamp_val="$ver rev$MIPS_ALSA_BUILD_REV zig$MIPS_ZIG_VERSION"
  build="$MIPS_CACHE/build/$target"
  if [ "$kind" = shared ]; then
    root="$(mips_dynamic_root "$target")"
    stamp_val="$stamp_val dynamic-rev$MIPS_DYNAMIC_BUILD_REV"
    build="$MIPS_CACHE/build/$target-shared"
    link_flags=(--disable-static --enable-shared)
  fi
  local stamp="$root/.stamp-alsa"
  [ "$kind" = shared ] || stamp="$root/.stamp"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_val" ]; then
    mips_log "alsa-lib ($kind) for $target: cached ($ver)"
    return
  fi
  rm -rf "$build"
  if [ "$kind" = shared ]; then
    rm -rf "${root:?}/usr"
  else
    rm -rf "$root"
  fi
  mkdir -p "$build"
  mips_log "alsa-lib ($kind) for $target: configure ($ver, CC=$(basename "$cc"))"
  # Slim static alsa-lib: what raopd calls (PCM, control, mixer, config parsing) and the PCM
  # plugins that card configurations and users name for playback (docs/mips.md). No rawmidi,
  # seq, hwdep (the alsa crate binds them, raopd does not use them), UCM, topology, alisp,
  # python, old versioned symbols, capture-only or exotic PCM plugins, control plugins.
  (cd "$build" && CC="$cc" AR="$ar" RANLIB="$ranlib" CFLAGS="-Os -g0 -fno-unwind-tables -fno-asynchronous-unwind-tables -ffunction-sections -fdata-sections" \
    "$src/configure" --host="$host" --build="$(uname -m)-linux-gnu" \
      --prefix=/usr --libdir=/usr/lib --sysconfdir=/etc \
      --with-configdir=/usr/share/alsa --with-plugindir=/usr/lib/alsa-lib \
      "${link_flags[@]}" --disable-dependency-tracking \
      --disable-python --disable-alisp --disable-ucm --disable-topology \
      --disable-old-symbols --with-versioned=no --with-debug=no \
      --disable-rawmidi --disable-seq --disable-hwdep --disable-aload \
      --with-pcm-plugins="$MIPS_ALSA_PCM_PLUGINS" --with-ctl-plugins=no \
      > configure.log 2>&1) || { tail -n 40 "$build/configure.log" >&2; mips_die "alsa-lib configure failed for $target (log: $build/configure.log)"; }
  mips_log "alsa-lib ($kind) for $target: make -j$JOBS"
  (cd "$build" && make -j"$JOBS" -C include > make.log 2>&1 && make -j"$JOBS" -C src >> make.log 2>&1 \
    && make -C include install DESTDIR="$root" >> make.log 2>&1 \
    && make -C src install DESTDIR="$root" >> make.log 2>&1 \
    && make -C utils install DESTDIR="$root" >> make.log 2>&1) \
    || { tail -n 40 "$build/make.log" >&2; mips_die "alsa-lib ($kind) build failed for $target (log: $build/make.log)"; }
  local lib=libasound.a
  [ "$kind" = shared ] && lib=libasound.so.2
  [ -f "$root/usr/lib/$lib" ] && [ -f "$root/usr/lib/pkgconfig/alsa.pc" ] \
    || mips_die "alsa-lib ($kind) install for $target is incomplete"
  rm -rf "$build"
  # libtool's .la file names build paths; nothing here reads it.
  [ "$kind" = static ] || rm -f "$root/usr/lib/libasound.la"
  echo "$stamp_val" > "$stamp"
  mips_log "alsa-lib ($kind) for $target: installed in $root"
}

# ---------------------------------------------------------------------------------------------
# 6. musl's libc.so for the dynamic (OpenWrt-style) musl builds
# ---------------------------------------------------------------------------------------------
# zig links dynamic executables against a stub libc.so of its own and ships no musl dynamic
# loader, so the one the binaries run with (under qemu -L) is built here: Debian's musl source
# package, compiled with the same zig cc as everything else (soft-float mips32r2, musl's
# "mips-sf"/"mipsel-sf" subarch). musl's libc.so is also its loader; OpenWrt installs it as
# /lib/libc.so with /lib/ld-musl-<arch>-sf.so.1 pointing at it, and so does this sysroot.
musl_src_dir() { ls -d "$MIPS_CACHE"/src/musl-*/ 2>/dev/null | head -n1; }

fetch_musl_src() {
  if [ -n "$(musl_src_dir)" ]; then return; fi
  mkdir -p "$MIPS_CACHE/src"
  mips_log "apt-get source musl"
  (cd "$MIPS_CACHE/src" && apt-get source -qq musl >/dev/null 2>&1) \
    || mips_die "apt-get source musl failed (deb-src entries missing? run as root once)"
  [ -n "$(musl_src_dir)" ] || mips_die "musl source was not unpacked"
}

build_musl_so() {
  local target="$1" src ver root build stamp stamp_val cc loader
  src="$(musl_src_dir)"
  ver="$(basename "$src")"
  root="$(mips_dynamic_root "$target")"
  stamp="$root/.stamp-musl"
  stamp_val="$ver zig$MIPS_ZIG_VERSION dynamic-rev$MIPS_DYNAMIC_BUILD_REV soname"
  if [ -f "$stamp" ] && [ -f "$root/lib/libc.so" ] && [ "$(cat "$stamp")" = "$stamp_val" ]; then
    mips_log "musl libc.so for $target: cached ($ver)"
    return
  fi
  case "$target" in
    mips-unknown-linux-musl) cc="$MIPS_REPO_ROOT/scripts/zigcc-mips-musl" ;;
    mipsel-unknown-linux-musl) cc="$MIPS_REPO_ROOT/scripts/zigcc-mipsel-musl" ;;
    *) mips_die "no musl build for $target" ;;
  esac
  loader="$(mips_musl_loader "$target")"
  build="$MIPS_CACHE/build/$target-musl"
  rm -rf "$build" "${root:?}/lib"
  mkdir -p "$build" "$root/lib"
  mips_log "musl libc.so for $target: build ($ver, CC=$(basename "$cc"))"
  (cd "$build" && CC="$cc" CFLAGS="-Os" "$src/configure" --target="${target%%-*}-linux-musl" \
      --prefix=/usr --syslibdir=/lib --disable-static > configure.log 2>&1 \
    && grep -qx "ARCH = mips" config.mak && grep -q -- "-sf$" <(sed -n 's/^SUBARCH = //p' config.mak)) \
    || { tail -n 20 "$build/configure.log" >&2; mips_die "musl configure failed for $target"; }
  # The soft-float and 64-bit helpers (__adddf3, __udivdi3, ...) come from zig's compiler_rt.
  # That archive also defines memcpy, memset, sqrt and other libc functions, weak and hidden,
  # and a hidden definition anywhere in a link hides the symbol: libc.so would not export
  # memcpy. So the compiler_rt copy linked here keeps those libc names local.
  local bu objs rt
  bu="${target%%-*}-linux-gnu"
  mapfile -t objs < <(cd "$build" && make -n lib/libc.so 2>/dev/null | tr ' ' '\n' | grep '\.lo$')
  [ ${#objs[@]} -gt 100 ] || mips_die "musl: no object list from its Makefile"
  (cd "$build" && make -j"$JOBS" "${objs[@]}" > make.log 2>&1) \
    || { tail -n 20 "$build/make.log" >&2; mips_die "musl build failed for $target (log: $build/make.log)"; }
  printf 'int raopd_probe(void) { return 0; }\n' > "$build/probe.c"
  rt="$("$cc" -shared -nostdlib -v "$build/probe.c" -o "$build/probe.so" 2>&1 | tr ' ' '\n' \
    | awk '/\/libcompiler_rt\.a$/ && !n++')" && [ -n "$rt" ] || mips_die "musl: cannot find zig's compiler_rt for $target"
  rt="$(realpath "$rt")" # zig prints it relative to the current directory
  # One object; its member name is a path, which objcopy cannot handle inside the archive.
  [ "$("$bu-ar" t "$rt" | wc -l)" = 1 ] || mips_die "musl: unexpected compiler_rt layout ($rt)"
  "$bu-ar" p "$rt" > "$build/compiler_rt_zig.o"
  (cd "$build" && "$bu-nm" --defined-only -g "${objs[@]}" 2>/dev/null | awk 'NF == 3 { print $3 }' | sort -u > musl.syms \
    && "$bu-nm" --defined-only -g compiler_rt_zig.o | awk 'NF == 3 { print $3 }' | sort -u > rt.syms \
    && comm -12 musl.syms rt.syms > both.syms \
    && "$bu-objcopy" --localize-symbols=both.syms compiler_rt_zig.o compiler_rt.o \
    && rm -f libcompiler_rt.a && "$bu-ar" rcs libcompiler_rt.a compiler_rt.o \
    && make lib/libc.so LIBCC="-rtlib=none $build/libcompiler_rt.a" LDFLAGS="-Wl,-soname,libc.so" >> make.log 2>&1) \
    || { tail -n 20 "$build/make.log" >&2; mips_die "musl libc.so link failed for $target (log: $build/make.log)"; }
  "$bu-nm" -D "$build/lib/libc.so" | awk '$2 == "T" && $3 == "memcpy" { f = 1 } END { exit !f }' || mips_die "musl: libc.so does not export memcpy"
  # Named "libc.so" inside (musl's Makefile gives it no soname; GNU ld then records the name
  # -lc found): scripts/zigcc links against this file by its path, and lld records the path
  # unless the library names itself.
  "$bu-readelf" -d "$build/lib/libc.so" | grep -q 'SONAME.*\[libc\.so\]' || mips_die "musl: libc.so has no soname"
  cp "$build/lib/libc.so" "$root/lib/libc.so"
  ln -sfn libc.so "$root/lib/$loader"
  rm -rf "$build"
  echo "$stamp_val" > "$stamp"
  mips_log "musl libc.so for $target: installed in $root/lib ($loader)"
}

# ---------------------------------------------------------------------------------------------
# 7. ALSA configuration for MIPS binaries under qemu-user
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
  fetch_musl_src
  for t in mips-unknown-linux-musl mipsel-unknown-linux-musl; do
    build_musl_so "$t"
    build_alsa "$t" shared
  done
  setup_alsa_qemu_conf
  # Targets named on the command line beyond the MIPS ones (scripts/build-mips.sh passes
  # $MIPS_HOST_TARGET when asked to build it): their static alsa-lib.
  local t
  for t in "$@"; do
    if [ "$t" = "$MIPS_HOST_TARGET" ]; then build_alsa "$t"; fi
  done
  command -v qemu-mips >/dev/null && command -v qemu-mipsel >/dev/null || mips_die "qemu-mips/qemu-mipsel missing"
  mips_log "MIPS setup complete in $((SECONDS - t0))s (cache: $MIPS_CACHE)"
}

main "$@"
