#!/usr/bin/env bash
# pipewire_stream.sh FILE LOGDIR HOST:PORT [HOST:PORT ...] [--encryption RSA|none]
#                    [--codec ALAC|PCM] [--tail SECONDS] [--preroll SECONDS]
#
# Streams FILE through PipeWire's RAOP sink (libpipewire-module-raop-sink, Debian 12's 0.3.65)
# to one receiver, or to several at once: one sink per HOST:PORT, and the one player linked to
# all of them (multi-room). The end-to-end tests run it inside their network namespace (ip netns
# exec), under `timeout`.
#
# It starts a private, headless pipewire daemon: its own runtime and config dirs, no session
# manager (so nothing links or configures ports by itself), a dummy driver as the graph clock,
# the graph rate pinned to 44100 Hz (no resampling anywhere: FILE must be 44100 Hz S16 stereo).
# Each sink and the player get their ports from `adapter.auto-port-config`, which is what a
# session manager would otherwise set. The sinks run from the start (node.always-process) and
# open their RTSP sessions (OPTIONS, ANNOUNCE, SETUP, RECORD), sending silence; once every sink
# has RECORD's reply, pw-cat plays FILE (after --preroll seconds of silence, see below), pw-link
# connects its two channels to every sink. After pw-cat ends, the sinks stay up --tail seconds
# (default 3: the receivers are still playing their latency buffers), then the daemon is
# stopped, which sends TEARDOWN. Logs: LOGDIR/pipewire.log (daemon, raop-sink at debug level),
# LOGDIR/pipewire.conf, LOGDIR/pw-cat.log.
#
# The graph's quantum is pinned to 352 frames, one RAOP packet: each cycle then fills and sends
# exactly one packet per sink, and a sync packet's time stamp (CLOCK_MONOTONIC, taken when it is
# sent) is always the same distance from the audio it describes. With PipeWire's default
# power-of-two quantum (256 for the sink's 352-frame node.latency) packets straddle cycles, and
# that distance depends on the packet's phase in the cycle (a range of 255 frames, 5.8 ms), so
# two sinks' sync packets can disagree by up to that much and two exact receivers with them
# (0.06 and 0.67 ms apart in two runs of tests/multiroom.rs; 0.04 ms with 352).
#
# Exit status: 0 on success; 1 if the daemon or a sink did not come up, a link failed, pw-cat
# failed, or a sink's RTSP session did not reach RECORD (pw-cat exits 0 even then); 2 on usage.
set -uo pipefail

usage() {
  echo "usage: $0 FILE LOGDIR HOST:PORT [HOST:PORT ...] [--encryption RSA|none] [--codec ALAC|PCM] [--tail S] [--preroll S]" >&2
  exit 2
}
[ $# -ge 3 ] || usage
file=$1 logdir=$2
shift 2
encryption=RSA codec=ALAC tail=3 preroll=0.5
targets=()
while [ $# -gt 0 ]; do
  case $1 in
    --encryption) encryption=${2:?}; shift 2 ;;
    --codec) codec=${2:?}; shift 2 ;;
    --tail) tail=${2:?}; shift 2 ;;
    --preroll) preroll=${2:?}; shift 2 ;;
    -*) usage ;;
    *:*) targets+=("$1"); shift ;;
    *) usage ;;
  esac
done
[ ${#targets[@]} -ge 1 ] || usage
[ -r "$file" ] || { echo "pipewire_stream: cannot read $file" >&2; exit 2; }
mkdir -p "$logdir"
log=$logdir/pipewire.log
catlog=$logdir/pw-cat.log
: > "$log"
: > "$catlog"

# Runtime dir (socket) and config/home dirs of our own: nothing of a desktop session's PipeWire
# is seen or touched. Short path: the socket's sun_path is 108 bytes.
run=$(mktemp -d /tmp/raopd-pw.XXXXXX)
mkdir -p "$run/config"
export XDG_RUNTIME_DIR=$run PIPEWIRE_RUNTIME_DIR=$run HOME=$run XDG_CONFIG_HOME=$run/config
export XDG_STATE_HOME=$run/state PIPEWIRE_REMOTE=pipewire-0
unset PIPEWIRE_CONFIG_DIR PIPEWIRE_CONFIG_NAME PULSE_SERVER

# What a session manager would set: the node's ports, one mono port per channel, channel
# positions kept (FL, FR).
ports='adapter.auto-port-config = { mode = dsp monitor = false control = false position = preserve }'

{
  cat <<EOF
context.properties = {
    core.daemon = true
    core.name = pipewire-0
    default.clock.rate = 44100
    default.clock.allowed-rates = [ 44100 ]
    default.clock.quantum = 352
    default.clock.min-quantum = 352
    default.clock.max-quantum = 352
    clock.power-of-two-quantum = false
    support.dbus = false
    link.max-buffers = 16
}
context.spa-libs = {
    audio.convert.* = audioconvert/libspa-audioconvert
    support.*       = support/libspa-support
}
context.modules = [
    { name = libpipewire-module-rt
      args = { nice.level = -11 rt.prio = 88 }
      flags = [ ifexists nofail ]
    }
    { name = libpipewire-module-protocol-native }
    { name = libpipewire-module-metadata }
    { name = libpipewire-module-spa-node-factory }
    { name = libpipewire-module-client-node }
    { name = libpipewire-module-access }
    { name = libpipewire-module-adapter }
    { name = libpipewire-module-link-factory }
EOF
  i=0
  for t in "${targets[@]}"; do
    cat <<EOF
    { name = libpipewire-module-raop-sink
      args = {
        raop.hostname = "${t%:*}"
        raop.port = ${t##*:}
        raop.transport = udp
        raop.encryption.type = $encryption
        raop.audio.codec = $codec
        node.name = raop$i
        node.description = "RAOP $t"
        stream.props = { node.always-process = true $ports }
      }
    }
EOF
    i=$((i + 1))
  done
  cat <<EOF
]
context.objects = [
    { factory = spa-node-factory
      args = {
        factory.name    = support.node.driver
        node.name       = Dummy-Driver
        node.group      = pipewire.dummy
        priority.driver = 20000
      }
    }
]
EOF
} > "$run/pipewire.conf"
cp "$run/pipewire.conf" "$logdir/pipewire.conf"

# Debug level for the RAOP sink and its RTSP client (both log as module topics), info elsewhere.
PIPEWIRE_DEBUG='3,mod.raop-sink:5,default:4' PIPEWIRE_LOG_TIMESTAMP=1 \
  pipewire -c "$run/pipewire.conf" </dev/null >>"$log" 2>&1 &
pw=$!
cat_pid=

stop_all() {
  if [ -n "$cat_pid" ] && kill -0 "$cat_pid" 2>/dev/null; then
    kill -TERM "$cat_pid"
    wait "$cat_pid" 2>/dev/null
  fi
  if kill -0 "$pw" 2>/dev/null; then
    kill -TERM "$pw"
    for _ in $(seq 50); do kill -0 "$pw" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pw" 2>/dev/null
  fi
  wait "$pw" 2>/dev/null
  rm -rf "$run"
}
trap stop_all EXIT

fail() {
  echo "pipewire_stream: $*; end of $log:" >&2
  tail -n 30 "$log" >&2
  exit 1
}

# The sinks' input ports, once the daemon is up.
n=${#targets[@]}
up=0
for _ in $(seq 100); do
  if [ "$(pw-link -i 2>/dev/null | grep -c '^raop[0-9]*:playback_F[LR]$')" = $((2 * n)) ]; then up=1; break; fi
  kill -0 "$pw" 2>/dev/null || break
  sleep 0.1
done
[ $up = 1 ] || fail "the daemon or its $n RAOP sink(s) did not come up"

# always-process: each sink runs from the start, unlinked, so it connects and reaches RECORD
# before the player is linked (a sink drops what it is given before RECORD's reply, 0.1-0.2 s),
# sends silence until then, and keeps streaming after the player ends (no FLUSH; stopping the
# daemon sends TEARDOWN).
rec=0
for _ in $(seq 150); do
  rec=$(grep -c 'rtsp_record_reply.*reply 200' "$log")
  [ "$rec" -ge "$n" ] && break
  kill -0 "$pw" 2>/dev/null || break
  sleep 0.1
done
[ "$rec" -ge "$n" ] || fail "$rec of $n RAOP sink(s) reached RECORD"

# The player: not linked by itself (no session manager, --target 0); it starts when the first
# link is made. The links are made one by one, and for a moment some sink channels are not yet
# linked (pw-link cannot link several ports at once): the player therefore plays --preroll
# seconds (default 0.5) of digital silence before FILE, so that the first frame of FILE reaches
# every sink on both channels. The receivers hear that silence after the sinks' own (they send
# silence from RECORD on), so it changes nothing for them.
played=$run/played.wav
sox -D -n -r 44100 -c 2 -b 16 -e signed-integer "$run/preroll.wav" trim 0 "$preroll" &&
  sox -D "$run/preroll.wav" "$file" "$played" ||
  fail "sox could not prepend $preroll s of silence to $file (44100 Hz 16-bit stereo expected)"
pw-cat --playback --target 0 -P "{ node.name = player $ports }" "$played" </dev/null >>"$catlog" 2>&1 &
cat_pid=$!
ok=0
for _ in $(seq 100); do
  if [ "$(pw-link -o 2>/dev/null | grep -c '^player:output_F[LR]$')" = 2 ]; then ok=1; break; fi
  kill -0 "$cat_pid" 2>/dev/null || break
  sleep 0.1
done
[ $ok = 1 ] || fail "pw-cat's ports did not appear ($(cat "$catlog"))"

# Link the player to every sink: all sinks then run in one graph, on one clock, fed the same
# buffers.
for ((i = 0; i < n; i++)); do
  for ch in FL FR; do
    pw-link "player:output_$ch" "raop$i:playback_$ch" >>"$catlog" 2>&1 ||
      fail "pw-link player:output_$ch raop$i:playback_$ch failed"
  done
done

rc=0
wait "$cat_pid" || rc=$?
cat_pid=
[ $rc = 0 ] || echo "pipewire_stream: pw-cat exited $rc: $(tail -n 5 "$catlog")" >&2
sleep "$tail"
stop_all
trap - EXIT

# A sink that lost its session (FLUSH or a second RECORD) while the player ran; pw-cat's exit
# status does not say.
records=$(grep -c 'rtsp_record_reply.*reply 200' "$log")
if [ "$records" != "$n" ] || grep -q 'sent: FLUSH' "$log"; then
  echo "pipewire_stream: the RAOP session was interrupted ($records RECORDs for $n sinks, or a FLUSH); end of $log:" >&2
  tail -n 30 "$log" >&2
  [ $rc = 0 ] && rc=1
fi
if grep -E '^\[E\].*(raop|rtsp)' "$log" >&2; then
  echo "pipewire_stream: the RAOP sink logged errors (above)" >&2
  [ $rc = 0 ] && rc=1
fi
exit $rc
