#!/usr/bin/env bash
# bench-vs-shairport.sh [SECONDS]
#
# Resource use of raopd against shairport-sync for the same job: PulseAudio's module-raop-sink
# streams the same SECONDS (default 30) of white noise, RSA-encrypted ALAC over UDP, first to
# shairport-sync (Debian's package), then to raopd (release build), both in one private network
# namespace with loopback only. Each receiver runs under `/usr/bin/time -v` from before the stream
# until it is stopped afterwards, writing the audio to a file, so the numbers cover a whole
# session: user + system CPU seconds and maximum resident set size. It prints both, the
# raopd/shairport-sync ratios, and the size of the raopd binary.
#
# shairport-sync publishes itself through avahi, so the namespace gets its own dbus-daemon and
# avahi-daemon (the latter in a private mount namespace, so its pid file and socket cannot clash
# with a host avahi). raopd runs with its own mDNS responder on, as it would in use.
#
# Needs root (network namespaces). Installs what is missing with apt-get (shairport-sync, time,
# PulseAudio with its RAOP module, dbus, avahi, iproute2) and removes everything it started or
# created when it exits, however it exits (KEEP=1 keeps the scratch directory, for inspection).
set -euo pipefail

SECS=${1:-30}
[[ $SECS =~ ^[0-9]+$ ]] && [ "$SECS" -ge 5 ] || { echo "usage: $0 [SECONDS>=5]" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "bench-vs-shairport: must run as root" >&2; exit 2; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

# Ports: RTSP 5000/5001; UDP away from 6001-6010, where module-raop-sink binds its own.
SP_PORT=5000 SP_UDP=6101 RD_PORT=5001 RD_UDP=6201

# --- dependencies ------------------------------------------------------------------------------
PACKAGES=(shairport-sync time pulseaudio pulseaudio-utils pulseaudio-module-raop dbus avahi-daemon
  iproute2 python3)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian package enables a system-wide shairport-sync service; this run does not use it.

echo "building raopd (release)"
cargo build --release --quiet --bin raopd
RAOPD=$repo/target/release/raopd
[ -n "${CARGO_TARGET_DIR:-}" ] && RAOPD=$CARGO_TARGET_DIR/release/raopd

# --- scratch space, namespace and cleanup -------------------------------------------------------
work=$(mktemp -d /tmp/raopd-bench.XXXXXX)
NS=raopd-bench-$$
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.3
  # Whatever is still inside the namespace belongs to this run.
  if ip netns list | grep -qw "$NS"; then
    for p in $(ip netns pids "$NS" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    ip netns delete "$NS" 2>/dev/null || true
  fi
  if [ -n "${KEEP:-}" ]; then echo "files kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM

ip netns add "$NS"
nsx() { ip netns exec "$NS" "$@"; }
nsx ip link set lo up multicast on
nsx ip route replace 224.0.0.0/4 dev lo

cat > "$work/dbus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$work/dbus.sock</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/> <allow own="*"/> <allow send_type="method_call"/>
    <allow send_destination="*" eavesdrop="true"/> <allow eavesdrop="true"/>
  </policy>
</busconfig>
EOF
nsx dbus-daemon --config-file="$work/dbus.conf" --fork --print-pid > "$work/dbus.pid"
pids+=("$(cat "$work/dbus.pid")")
for _ in $(seq 50); do [ -S "$work/dbus.sock" ] && break; sleep 0.1; done
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$work/dbus.sock

cat > "$work/avahi.conf" <<'EOF'
[server]
use-ipv4=yes
use-ipv6=no
allow-interfaces=lo
enable-dbus=yes
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
EOF
nsx unshare -m bash -c 'mount --make-rprivate / && mkdir -p /run/avahi-daemon &&
  mount -t tmpfs none /run/avahi-daemon &&
  exec avahi-daemon -f "$0" --no-drop-root --no-chroot --no-rlimits' "$work/avahi.conf" \
  > "$work/avahi.log" 2>&1 < /dev/null &
pids+=($!)
for _ in $(seq 50); do grep -qs "Server startup complete" "$work/avahi.log" && break; sleep 0.1; done
grep -q "Server startup complete" "$work/avahi.log" || { cat "$work/avahi.log" >&2; exit 1; }

# --- input: SECONDS of white noise at -6 dBFS, then 2 s of silence -----------------------------
python3 - "$work/noise.wav" "$SECS" <<'EOF'
import random, struct, sys
path, secs = sys.argv[1], int(sys.argv[2])
rng = random.Random(0x5241_4F50)
frames = secs * 44100
data = bytearray(struct.pack("<" + "h" * (2 * frames),
                             *(rng.randint(-16384, 16383) for _ in range(2 * frames))))
data += bytes(2 * 44100 * 4)
hdr = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + struct.pack(
    "<IHHIIHH", 16, 1, 2, 44100, 44100 * 4, 4, 16) + b"data" + struct.pack("<I", len(data))
open(path, "wb").write(hdr + data)
EOF

# --- one measured run ----------------------------------------------------------------------------
# start_rx NAME PORT RECEIVER-COMMAND...: starts the receiver under /usr/bin/time -v and waits for
# its RTSP port. Sets $rx (the receiver's pid) and $wrapper (time's pid).
start_rx() {
  local name=$1 port=$2; shift 2
  rm -f "$work/$name.time"
  # Not through nsx: $! must be time's own pid (ip netns exec execs it), its child the receiver.
  ip netns exec "$NS" /usr/bin/time -v -o "$work/$name.time" "$@" > "$work/$name.stdout" \
    2> "$work/$name.log" < /dev/null &
  wrapper=$! rx=
  pids+=("$wrapper")
  for _ in $(seq 100); do
    [ -z "$rx" ] && rx=$(pgrep -P "$wrapper" | head -1 || true)
    [ -n "$rx" ] && nsx ss -Hltn "sport = :$port" | grep -q . && return 0
    sleep 0.1
  done
  tail -20 "$work/$name.log" >&2
  echo "$name did not listen on $port" >&2
  exit 1
}

stop_rx() {
  kill -TERM "$rx" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$wrapper" 2>/dev/null || break; sleep 0.1; done
  wait "$wrapper" 2>/dev/null || true
}

# run NAME PORT -- RECEIVER-COMMAND...: one session: the receiver is started, PulseAudio streams
# the file to it, the receiver is stopped. Leaves $work/NAME.time (time's report), NAME.stdout and
# NAME.log. PulseAudio 16.1's RAOP sink sometimes aborts at the start of a stream (an assertion
# in its I/O thread when the receiver answers RECORD quickly); such a run is discarded and
# repeated with a fresh receiver, up to three times.
run() {
  local name=$1 port=$2 try; shift 3
  for try in 1 2 3; do
    echo "$name: receiving ${SECS} s of RSA + ALAC from PulseAudio"
    start_rx "$name" "$port" "$@"
    if nsx bash tests/senders/pulse_stream.sh 127.0.0.1 "$port" "$work/noise.wav" \
      "$work/pulse-$name" --encryption RSA --codec ALAC --sink-volume 100 --tail 3 \
      > "$work/pulse-$name.out" 2>&1; then
      stop_rx
      return 0
    fi
    stop_rx
    if grep -q "Assertion 'pollfd' failed" "$work/pulse-$name.out"; then
      echo "$name: PulseAudio's RAOP sink aborted at the start (its known race); again"
      continue
    fi
    break
  done
  cat "$work/pulse-$name.out" >&2
  echo "the PulseAudio stream to $name failed" >&2
  exit 1
}

field() { # field FILE LABEL: a value from time -v's report ("\tLABEL: VALUE")
  grep -F "$2: " "$1" | head -1 | sed 's/.*: //'
}

cat > "$work/shairport.conf" <<EOF
general = { name = "bench-shairport"; port = $SP_PORT; udp_port_base = $SP_UDP; udp_port_range = 10;
  mdns_backend = "avahi"; interpolation = "basic"; ignore_volume_control = "yes"; };
sessioncontrol = { session_timeout = 20; };
EOF
run shairport "$SP_PORT" -- shairport-sync -c "$work/shairport.conf" -u -o stdout
mv "$work/shairport.stdout" "$work/shairport.raw"
run raopd "$RD_PORT" -- "$RAOPD" --name bench-raopd --port "$RD_PORT" --udp-port-base "$RD_UDP" \
  --output "pipe:$work/raopd.raw"

# --- report ----------------------------------------------------------------------------------------
report() {
  local name=$1 t=$work/$1.time
  local user sys rss bytes
  user=$(field "$t" "User time (seconds)")
  sys=$(field "$t" "System time (seconds)")
  rss=$(field "$t" "Maximum resident set size (kbytes)")
  bytes=$(stat -c %s "$work/$name.raw")
  [ -n "$user" ] && [ -n "$rss" ] || { echo "no time report for $name" >&2; cat "$t" >&2; exit 1; }
  # Less than half the stream written means the receiver did not really play it.
  [ "$bytes" -ge $((SECS * 44100 * 4 / 2)) ] || {
    tail -20 "$work/$name.log" >&2; echo "$name wrote only $bytes bytes" >&2; exit 1; }
  echo "$name $user $sys $rss $bytes"
}
sp=$(report shairport)
rd=$(report raopd)
size=$(stat -c %s "$RAOPD")
python3 - "$sp" "$rd" "$size" "$SECS" "$(shairport-sync -V 2>&1 | head -1)" <<'EOF'
import sys
sp, rd = (s.split() for s in sys.argv[1:3])
size, secs, version = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def row(r):
    name, user, sys_, rss, bytes_ = r
    return name, float(user), float(sys_), int(rss), int(bytes_)
rows = [row(sp), row(rd)]
print(f"\nPulseAudio RSA + ALAC, {secs} s of audio; shairport-sync {version}")
print(f"{'receiver':<16}{'user s':>9}{'sys s':>9}{'CPU s':>9}{'max RSS KiB':>13}{'audio s':>9}")
for name, u, s, rss, b in rows:
    print(f"{name:<16}{u:9.2f}{s:9.2f}{u + s:9.2f}{rss:13d}{b / 176400:9.1f}")
(_, su, ss, srss, _), (_, ru, rs, rrss, _) = rows
cpu = (ru + rs) / (su + ss) if su + ss > 0 else float("nan")
print(f"ratio raopd/shairport-sync: CPU time {cpu:.3f}, max RSS {rrss / srss:.3f}")
print(f"raopd binary: {size} bytes ({size / 1024:.0f} KiB)")
EOF
