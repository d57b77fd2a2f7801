#!/usr/bin/env bash
# Boot the image from scripts/build-image.sh under full-system emulation
# (`qemu-system-mipsel -M malta -cpu 24Kc`) inside a network namespace, on a tap device: the
# guest has its own address there (10.13.0.2, host side 10.13.0.1), so senders started in the
# namespace reach it as they would a speaker on the LAN, and mDNS multicast crosses the link.
#
#   sudo scripts/run-image.sh                     # own namespace `raopd-image`, removed on exit
#   sudo scripts/run-image.sh --netns NAME        # an existing namespace (e.g. a test's)
#   sudo ip netns exec raopd-image avahi-browse -rt _raop._tcp     # from another terminal
#
# Options:
#   --netns NAME        namespace to put the tap device in (created and removed when absent)
#   --log FILE          the serial console's log (default <image dir>/console.log)
#   --console PATH      unix socket of the serial console (default <image dir>/console.sock):
#                       a shell runs there; lines written to it are typed into the guest
#   --append ARGS       extra kernel command line, e.g. `raopd.log=debug` (see board/image/)
#   --ready-file FILE   written (empty) once raopd's RTSP port answers from the host side
# Ends on SIGTERM/SIGINT with a clean shutdown: `poweroff` typed on the console (busybox init
# stops raopd with SIGTERM, which sends its mDNS goodbye), qemu is killed only if the guest is
# not down within 30 s. Without the recommended ROM packages of qemu-system-mips there is no
# VGA BIOS or NIC boot ROM: hence -vga none and romfile= on the NIC.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir="${RAOPD_IMAGE_DIR:-${CARGO_TARGET_DIR:-$repo/target}/image}"
netns="" log="" sock="" append="" ready=""
while [ $# -gt 0 ]; do
  case "$1" in
    --netns) netns=$2; shift 2 ;;
    --log) log=$2; shift 2 ;;
    --console) sock=$2; shift 2 ;;
    --append) append=$2; shift 2 ;;
    --ready-file) ready=$2; shift 2 ;;
    -h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run-image.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
log=${log:-$dir/console.log}
sock=${sock:-$dir/console.sock}
[ "$(id -u)" = 0 ] || { echo "run-image.sh: run as root (network namespace, tap device)" >&2; exit 2; }
for f in vmlinuz initramfs.cpio.gz; do
  [ -f "$dir/$f" ] || { echo "run-image.sh: $dir/$f missing: run scripts/build-image.sh" >&2; exit 1; }
done
command -v qemu-system-mipsel >/dev/null || { echo "run-image.sh: qemu-system-mipsel missing (package qemu-system-mips)" >&2; exit 1; }

host_ip=10.13.0.1 guest_ip=10.13.0.2 tap=raopd-tap0
own_ns=0
if [ -z "$netns" ]; then
  netns=raopd-image
  ip netns del "$netns" 2>/dev/null || true
  ip netns add "$netns"
  own_ns=1
fi
nsx() { ip netns exec "$netns" "$@"; }
nsx ip link set lo up
nsx ip tuntap add dev "$tap" mode tap
nsx ip addr add "$host_ip/24" dev "$tap"
nsx ip link set "$tap" up multicast on
# mDNS: the namespace's multicast goes out on the tap link (a /24 route beats 224.0.0.0/4).
nsx ip route replace 224.0.0.251/32 dev "$tap"

rm -f "$sock" "$log"
qemu_pid=""
cleanup() {
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    # Type `poweroff` on the console; busybox init runs the shutdown entries and powers off,
    # which ends qemu (-no-reboot).
    python3 - "$sock" <<'PY' || true
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
# 16 bytes: the emulated UART hands input on in groups of 8 (its FIFO trigger level), and
# a last partial group may wait for more input; the empty lines are harmless to the shell.
s.sendall(b"\npoweroff\n" + b"\n" * 6)
s.close()
PY
    for _ in $(seq 300); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$qemu_pid" 2>/dev/null; then
      echo "run-image.sh: guest did not power off within 30 s; killing qemu" >&2
      kill -KILL "$qemu_pid" 2>/dev/null || true
    fi
    wait "$qemu_pid" 2>/dev/null || true
  fi
  nsx ip link del "$tap" 2>/dev/null || true
  [ "$own_ns" = 1 ] && ip netns del "$netns" 2>/dev/null || true
  rm -f "$sock"
}
trap cleanup EXIT
trap 'exit 0' TERM INT

start=$(date +%s.%N)
# setsid: a Ctrl-C in the terminal reaches this script (which powers the guest off), not qemu.
nsx setsid qemu-system-mipsel -M malta -cpu 24Kc -m 256 -nodefaults -vga none -display none \
  -no-reboot -monitor none \
  -kernel "$dir/vmlinuz" -initrd "$dir/initramfs.cpio.gz" \
  -append "console=ttyS0 loglevel=5 raopd.ip=$guest_ip/24 raopd.gw=$host_ip $append" \
  -chardev "socket,id=con,path=$sock,server=on,wait=off,logfile=$log" -serial chardev:con \
  -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no" \
  -device "pcnet,netdev=n0,mac=52:54:00:13:00:02,romfile=" &
qemu_pid=$!
echo "run-image.sh: qemu pid $qemu_pid in namespace $netns; console log $log, console socket $sock"

# Ready = raopd's RTSP port answers from the host side of the link.
while kill -0 "$qemu_pid" 2>/dev/null; do
  if nsx timeout 1 bash -c "exec 3<>/dev/tcp/$guest_ip/5000" 2>/dev/null; then
    printf 'run-image.sh: raopd ready at %s:5000, %.1f s after qemu started\n' "$guest_ip" \
      "$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')"
    [ -n "$ready" ] && : > "$ready"
    break
  fi
  sleep 0.5
done
wait "$qemu_pid" || true
qemu_pid=""
