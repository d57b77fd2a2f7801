#!/usr/bin/env bash
# `cross` pre-build hook (see Cross.toml): builds a static alsa-lib for the target inside the
# cross image, from the image distribution's own alsa-lib source package, and installs it as
#   /usr/local/alsa-$CROSS_TARGET/usr/{include,lib/libasound.a,lib/pkgconfig/alsa.pc}
# Cross.toml points pkg-config there (PKG_CONFIG_LIBDIR_<target>, PKG_CONFIG_SYSROOT_DIR_<target>).
#
# cross runs it as `./cross-prebuild-mips.sh $CROSS_TARGET` while building the image, as root.
# The C cross compiler is taken from CROSS_TOOLCHAIN_PREFIX (set by cross's images) or from
# CC_<target> (set by cross's images and expected from custom OpenWrt/Buildroot SDK images).
#
# Not exercised by CI (no container engine there); CI uses scripts/setup-mips.sh instead.
set -euo pipefail

target="${1:?usage: $0 TARGET}"
case "$target" in
  mips-unknown-linux-musl) host=mips-linux-musl ;;
  mipsel-unknown-linux-musl) host=mipsel-linux-musl ;;
  mips-unknown-linux-uclibc) host=mips-linux-uclibc ;;
  mipsel-unknown-linux-uclibc) host=mipsel-linux-uclibc ;;
  *) echo "$0: no alsa-lib recipe for $target" >&2; exit 2 ;;
esac

cc_var="CC_${target//-/_}"
if [ -n "${!cc_var:-}" ]; then
  cc="${!cc_var}"
elif [ -n "${CROSS_TOOLCHAIN_PREFIX:-}" ]; then
  cc="${CROSS_TOOLCHAIN_PREFIX}gcc"
else
  echo "$0: no C cross compiler: set $cc_var or CROSS_TOOLCHAIN_PREFIX in the image" >&2
  exit 1
fi
prefix_dir="/usr/local/alsa-$target"
if [ -f "$prefix_dir/usr/lib/libasound.a" ]; then
  echo "alsa-lib for $target already in $prefix_dir"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# Source packages: enable deb-src (Ubuntu/Debian one-line or deb822 sources).
if ! grep -rhsqE '^[[:space:]]*deb-src[[:space:]]|^Types:.*deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  if grep -qsE '^deb[[:space:]]' /etc/apt/sources.list; then
    sed -n -E 's/^deb([[:space:]])/deb-src\1/p' /etc/apt/sources.list > /etc/apt/sources.list.d/deb-src.list
  fi
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && sed -E 's/^Types:.*/Types: deb-src/' "$f" > "${f%.sources}-src.sources"
  done
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends dpkg-dev make xz-utils >/dev/null

work="$(mktemp -d)"
cd "$work"
apt-get source -qq alsa-lib
src="$(ls -d "$work"/alsa-lib-*/ | head -n1)"
mkdir build && cd build
# The same slim configuration as scripts/setup-mips.sh (plugin list: scripts/mips-common.sh).
CC="$cc" CFLAGS="-Os -fno-unwind-tables -fno-asynchronous-unwind-tables -ffunction-sections -fdata-sections" "$src/configure" --host="$host" \
  --prefix=/usr --libdir=/usr/lib --sysconfdir=/etc \
  --with-configdir=/usr/share/alsa --with-plugindir=/usr/lib/alsa-lib \
  --enable-static --disable-shared --disable-dependency-tracking \
  --disable-python --disable-alisp --disable-ucm --disable-topology \
  --disable-old-symbols --with-versioned=no --with-debug=no \
  --disable-rawmidi --disable-seq --disable-hwdep --disable-aload \
  --with-pcm-plugins=plug,linear,copy,route,rate,multi,null,file,empty,hooks,dmix,asym,iec958,softvol \
  --with-ctl-plugins=no
make -j"$(nproc)" -C include
make -j"$(nproc)" -C src
make -C include install DESTDIR="$prefix_dir"
make -C src install DESTDIR="$prefix_dir"
make -C utils install DESTDIR="$prefix_dir"
cd / && rm -rf "$work"
echo "alsa-lib for $target installed in $prefix_dir"
