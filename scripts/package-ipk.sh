#!/usr/bin/env bash
# Build the OpenWrt packages without the SDK:
#   raopd_<version>-<release>_<arch>.ipk        for mips_24kc (ath79) and mipsel_24kc (ramips)
#   luci-app-raopd_<version>-<release>_all.ipk
#
#   scripts/package-ipk.sh [--out DIR] [--arch OPENWRT_ARCH=BINARY]... [--no-luci]
#
# Without --arch the binaries come from scripts/build-mips.sh:
#   mips_24kc   <- target/mips-unknown-linux-musl/release/raopd
#   mipsel_24kc <- target/mipsel-unknown-linux-musl/release/raopd
# (static musl builds with alsa-lib inside: the package depends on libc only).
# An ipk is an `ar` archive of debian-binary, control.tar.gz and data.tar.gz, as opkg reads
# it; the files come from board/openwrt/ (the same ones the SDK Makefiles install). The
# archives are reproducible (fixed owner, order and mtime: SOURCE_DATE_EPOCH or the last
# commit). Output: target/ipk/ unless --out.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out="$repo/target/ipk"
declare -a arches=()
luci=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --arch) arches+=("$2"); shift 2 ;;
    --no-luci) luci=0; shift ;;
    -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "package-ipk.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ ${#arches[@]} -eq 0 ]; then
  arches=(
    "mips_24kc=$repo/target/mips-unknown-linux-musl/release/raopd"
    "mipsel_24kc=$repo/target/mipsel-unknown-linux-musl/release/raopd"
  )
fi

version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n 1)
release=$(sed -n 's/^PKG_RELEASE:=//p' "$repo/board/openwrt/raopd/Makefile")
mk_version=$(sed -n 's/^PKG_VERSION:=//p' "$repo/board/openwrt/raopd/Makefile")
[ "$version" = "$mk_version" ] || {
  echo "package-ipk.sh: Cargo.toml says $version, the package Makefile $mk_version" >&2
  exit 1
}
maintainer=$(sed -n 's/^PKG_MAINTAINER:=//p' "$repo/board/openwrt/raopd/Makefile")
license=$(sed -n 's/^PKG_LICENSE:=//p' "$repo/board/openwrt/raopd/Makefile")
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# tar.gz of the current directory's contents, reproducible, as ./PATH entries.
pack() {
  tar --format=gnu --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
    -cf - . | gzip -9n > "$1"
}

# ipk NAME ARCH STAGING: control/ and data/ under STAGING -> NAME_VERSION_ARCH.ipk
ipk() {
  local name=$1 arch=$2 staging=$3 size
  size=$(du -sb --apparent-size "$staging/data" | cut -f1)
  sed -i "s/^Installed-Size: .*/Installed-Size: $size/" "$staging/control/control"
  (cd "$staging/data" && pack "$staging/data.tar.gz")
  (cd "$staging/control" && pack "$staging/control.tar.gz")
  echo "2.0" > "$staging/debian-binary"
  touch -d "@$epoch" "$staging/debian-binary" "$staging/control.tar.gz" "$staging/data.tar.gz"
  local file="$out/${name}_${version}-${release}_${arch}.ipk"
  rm -f "$file"
  (cd "$staging" && ar -rcD "$file" debian-binary control.tar.gz data.tar.gz)
  echo "$file"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for spec in "${arches[@]}"; do
  arch=${spec%%=*}
  bin=${spec#*=}
  [ -f "$bin" ] || {
    echo "package-ipk.sh: no binary $bin for $arch (run scripts/build-mips.sh first)" >&2
    exit 1
  }
  s="$work/raopd-$arch"
  mkdir -p "$s/control" "$s/data/usr/sbin" "$s/data/etc/init.d" "$s/data/etc/config"
  install -m 0755 "$bin" "$s/data/usr/sbin/raopd"
  install -m 0755 "$repo/board/openwrt/raopd/files/raopd.init" "$s/data/etc/init.d/raopd"
  install -m 0600 "$repo/board/openwrt/raopd/files/raopd.config" "$s/data/etc/config/raopd"
  cat > "$s/control/control" <<EOF
Package: raopd
Version: $version-$release
Depends: libc
Source: board/openwrt/raopd
SourceName: raopd
License: $license
LicenseFiles: LICENSE
Section: sound
Maintainer: $maintainer
Architecture: $arch
Installed-Size: 0
Description: AirPlay 1 (RAOP) speaker. Plays audio from iPhones, Macs, iTunes, pyatv
 and PulseAudio on the router's ALSA sound device. Configured in /etc/config/raopd.
EOF
  echo /etc/config/raopd > "$s/control/conffiles"
  cat > "$s/control/postinst" <<'EOF'
#!/bin/sh
# Enable and (re)start the service, except when installed into an image being built.
[ -n "$IPKG_INSTROOT" ] && exit 0
/etc/init.d/raopd enable
/etc/init.d/raopd restart
exit 0
EOF
  cat > "$s/control/prerm" <<'EOF'
#!/bin/sh
[ -n "$IPKG_INSTROOT" ] && exit 0
/etc/init.d/raopd stop
/etc/init.d/raopd disable
exit 0
EOF
  chmod 0755 "$s/control/postinst" "$s/control/prerm"
  ipk raopd "$arch" "$s"
done

if [ "$luci" = 1 ]; then
  app="$repo/board/openwrt/luci-app-raopd"
  s="$work/luci-app-raopd"
  mkdir -p "$s/control" "$s/data/www"
  cp -r "$app/htdocs/." "$s/data/www/"
  cp -r "$app/root/." "$s/data/"
  find "$s/data" -type d -exec chmod 0755 {} +
  find "$s/data" -type f -exec chmod 0644 {} +
  chmod 0755 "$s/data/usr/libexec/rpcd/luci.raopd"
  cat > "$s/control/control" <<EOF
Package: luci-app-raopd
Version: $version-$release
Depends: libc, luci-base, raopd
Source: board/openwrt/luci-app-raopd
SourceName: luci-app-raopd
License: $license
Section: luci
Maintainer: $maintainer
Architecture: all
Installed-Size: 0
Description: Web page for raopd, the AirPlay 1 speaker: settings, what is playing,
 playback buttons, and a card on the status overview.
EOF
  cat > "$s/control/postinst" <<'EOF'
#!/bin/sh
[ -n "$IPKG_INSTROOT" ] && exit 0
# New ACL and backend for rpcd, new menu entry for LuCI.
rm -f /tmp/luci-indexcache* /tmp/luci-modulecache/* 2>/dev/null
/etc/init.d/rpcd reload
exit 0
EOF
  chmod 0755 "$s/control/postinst"
  ipk luci-app-raopd all "$s"
fi
