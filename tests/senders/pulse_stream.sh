#!/usr/bin/env bash
# pulse_stream.sh HOST PORT FILE LOGDIR [--encryption RSA|none] [--codec ALAC|PCM]
#                 [--password PW] [--sink-volume PCT] [--tail SECONDS]
#
# Streams FILE through PulseAudio's RAOP sink (module-raop-sink) to the receiver at HOST:PORT.
# The end-to-end tests run it inside their network namespace (ip netns exec), under `timeout`.
# It starts a private pulseaudio daemon (own runtime dir and socket, no autospawn, no system
# config) with a null sink and the RAOP sink, plays FILE with paplay, keeps the sink up for
# --tail seconds (default 3: the receiver is still playing its latency buffer, and stopping the
# sink sends TEARDOWN), then stops the daemon. Its log is LOGDIR/pulseaudio.log.
#
# Exit status: 0 on success; 1 if the sink did not come up, paplay failed, or the log has an
# error from the RAOP/RTSP client (paplay exits 0 even when the RAOP session failed); 2 on usage.
set -uo pipefail

usage() {
  echo "usage: $0 HOST PORT FILE LOGDIR [--encryption RSA|none] [--codec ALAC|PCM] [--password PW] [--sink-volume PCT] [--tail S]" >&2
  exit 2
}
[ $# -ge 4 ] || usage
host=$1 port=$2 file=$3 logdir=$4
shift 4
encryption=RSA codec=ALAC password= volume= tail=3
while [ $# -gt 0 ]; do
  case $1 in
    --encryption) encryption=${2:?}; shift 2 ;;
    --codec) codec=${2:?}; shift 2 ;;
    --password) password=${2:?}; shift 2 ;;
    --sink-volume) volume=${2:?}; shift 2 ;;
    --tail) tail=${2:?}; shift 2 ;;
    *) usage ;;
  esac
done
[ -r "$file" ] || { echo "pulse_stream: cannot read $file" >&2; exit 2; }
mkdir -p "$logdir"
log=$logdir/pulseaudio.log
: > "$log"

# The runtime dir holds the native socket: keep its path short (sun_path is 108 bytes).
run=$(mktemp -d /tmp/raopd-pulse.XXXXXX)
{
  echo "load-module module-native-protocol-unix socket=$run/native auth-anonymous=1"
  echo "load-module module-null-sink sink_name=null"
  printf 'load-module module-raop-sink server=%s:%s sink_name=raop protocol=UDP encryption=%s codec=%s' \
    "$host" "$port" "$encryption" "$codec"
  [ -n "$password" ] && printf ' password="%s"' "$password"
  echo
} > "$run/default.pa"
export XDG_RUNTIME_DIR=$run HOME=$run PULSE_SERVER=unix:$run/native

pulseaudio -n -F "$run/default.pa" --daemonize=no --exit-idle-time=-1 --use-pid-file=no \
  --disable-shm=yes --log-target="file:$log" --log-level=debug --log-time=true </dev/null >/dev/null 2>&1 &
pa=$!

stop_pulse() {
  if kill -0 "$pa" 2>/dev/null; then
    kill -TERM "$pa"
    for _ in $(seq 50); do kill -0 "$pa" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pa" 2>/dev/null
  fi
  wait "$pa" 2>/dev/null
  rm -rf "$run"
}
trap stop_pulse EXIT

up=0
for _ in $(seq 100); do
  if pactl list short sinks 2>/dev/null | awk '{print $2}' | grep -qx raop; then up=1; break; fi
  kill -0 "$pa" 2>/dev/null || break
  sleep 0.1
done
if [ $up != 1 ]; then
  echo "pulse_stream: module-raop-sink did not come up; end of $log:" >&2
  tail -n 20 "$log" >&2
  exit 1
fi
# The sink authenticates (OPTIONS with Apple-Challenge, Digest when a password is set) as it
# loads; a stream started before that finished never connects (PulseAudio 16.1), so wait for the
# authentication's outcome. These are debug-log lines of module-raop-sink.
authed=0
for _ in $(seq 600); do
  if grep -qE 'aborting authentication|E: \[[^]]*\] (raop|rtsp)' "$log"; then break; fi
  if grep -q "OPTIONS (auth cb)" "$log" && grep -q "State change received" "$log"; then authed=1; break; fi
  kill -0 "$pa" 2>/dev/null || break
  sleep 0.1
done
if [ $authed != 1 ]; then
  echo "pulse_stream: the RAOP sink did not authenticate with $host:$port; end of $log:" >&2
  tail -n 20 "$log" >&2
  exit 1
fi
if [ -n "$volume" ]; then
  pactl set-sink-volume raop "$volume%" || { echo "pulse_stream: pactl set-sink-volume failed" >&2; exit 1; }
fi

rc=0
paplay -d raop "$file" || rc=$?
[ $rc = 0 ] || echo "pulse_stream: paplay exited $rc" >&2
sleep "$tail"
stop_pulse
trap - EXIT

if grep -E 'E: \[[^]]*\] (raop|rtsp)' "$log" >&2; then
  echo "pulse_stream: the RAOP sink logged errors (above)" >&2
  [ $rc = 0 ] && rc=1
fi
exit $rc
