#!/bin/sh
# Soak: streams to raopd for a long time under 2 % UDP loss and checks that it does not grow.
#
# In a private network namespace: raopd (release build, output to a pipe that is read and
# thrown away, timer-paced like a real device) and pyatv streaming one 60 s noise track after
# another. Every track is a new RTSP session with its own FLUSH, volume (a different value
# each time) and metadata (title, artist, album); nftables drops 2 % of the UDP packets to
# the daemon's stream ports (the rule the loss tests use), so retransmission runs all along.
# Every 10 s: VmRSS and open descriptors of raopd (from /proc) and the sync error from
# `raopd status`, written to a CSV. At the end: a summary, and exit status 1 if RSS grew more
# than RSS_BOUND_KIB after the first track, descriptors grew, raopd panicked or exited, the
# sync error went beyond SYNC_BOUND_US, or a track failed.
#
# usage: sudo scripts/soak.sh [--minutes N]   (default 30; needs root, nft and the test venv
#        from scripts/setup-test-deps.sh, or RAOPD_TEST_VENV)
set -eu

MINUTES=30
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) MINUTES="$2"; shift 2 ;;
        --minutes=*) MINUTES="${1#*=}"; shift ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "soak.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$MINUTES" in ''|*[!0-9]*) echo "soak.sh: --minutes takes a whole number" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "soak.sh: needs root (network namespace, nftables)" >&2; exit 2; }
command -v nft >/dev/null || { echo "soak.sh: nft missing: run scripts/setup-test-deps.sh" >&2; exit 2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${RAOPD_TEST_VENV:-$ROOT/target/test-env/venv}
PY="$VENV/bin/python"
[ -x "$PY" ] || { echo "soak.sh: no pyatv venv at $VENV: run scripts/setup-test-deps.sh" >&2; exit 2; }
RSS_BOUND_KIB=${RSS_BOUND_KIB:-512}
SYNC_BOUND_US=${SYNC_BOUND_US:-5000}
PORT=5900
UDP_BASE=6300

(cd "$ROOT" && cargo build --release --bin raopd --quiet)
RAOPD="$ROOT/target/release/raopd"
OUT="$ROOT/target/soak"
rm -rf "$OUT"; mkdir -p "$OUT"
NS="raopd-soak-$$"
ip netns add "$NS"
cleanup() {
    for p in $(ip netns pids "$NS" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT INT TERM
nsx() { ip netns exec "$NS" "$@"; }
nsx ip link set lo up
nsx nft add table inet soak
nsx nft add chain inet soak input '{ type filter hook input priority 0; }'
nsx nft add rule inet soak input udp dport "$UDP_BASE-$((UDP_BASE + 9))" counter numgen random mod 100 '<' 2 counter drop

"$PY" - "$OUT/track.wav" <<'PY'
import random, struct, sys, wave
w = wave.open(sys.argv[1], "wb")
w.setnchannels(2); w.setsampwidth(2); w.setframerate(44100)
r = random.Random(7)
w.writeframes(b"".join(struct.pack("<hh", r.randint(-8000, 8000), r.randint(-8000, 8000)) for _ in range(44100 * 60)))
PY

SOCK="$OUT/ctl.sock"
mkfifo "$OUT/audio.fifo"
nsx sh -c "cat '$OUT/audio.fifo' > /dev/null" &
# `ip netns exec` execs raopd in place, and `exec` keeps the shell out: $! is raopd's pid.
(RUST_LOG=info exec ip netns exec "$NS" "$RAOPD" --port "$PORT" --name soak --no-mdns \
    --udp-port-base "$UDP_BASE" --output "pipe:$OUT/audio.fifo" --control-socket "$SOCK" \
    2> "$OUT/raopd.log") &
RPID=$!
i=0
while ! nsx ss -Hltn "sport = :$PORT" | grep -q .; do
    i=$((i + 1)); [ $i -lt 100 ] || { echo "soak.sh: raopd did not start" >&2; cat "$OUT/raopd.log" >&2; exit 1; }
    sleep 0.1
done

# The sender: one track after another until the time is up.
END=$(( $(date +%s) + MINUTES * 60 ))
(
    n=0
    while [ "$(date +%s)" -lt "$END" ]; do
        n=$((n + 1))
        vol=$(( -(n * 7 % 31) ))
        if nsx "$PY" "$ROOT/tests/senders/pyatv_stream.py" 127.0.0.1 "$PORT" "$OUT/track.wav" \
            --volume-db "$vol" --title "Soak track $n" --artist "raopd" --album "soak" \
            >> "$OUT/pyatv.log" 2>&1; then
            echo ok >> "$OUT/tracks"
        else
            echo failed >> "$OUT/tracks"
        fi
    done
) &
SENDER=$!

echo "t_s,rss_kib,fds,sync_error_us" > "$OUT/samples.csv"
START=$(date +%s)
while [ "$(date +%s)" -lt "$END" ]; do
    sleep 10
    kill -0 "$RPID" 2>/dev/null || break
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$RPID/status")
    fds=$(ls "/proc/$RPID/fd" | wc -l)
    sync=$("$RAOPD" status --control-socket "$SOCK" 2>/dev/null \
        | sed -n 's/.*"sync_error_us":\(-\{0,1\}[0-9]*\).*/\1/p')
    echo "$(( $(date +%s) - START )),$rss,$fds,${sync:-}" >> "$OUT/samples.csv"
done
wait "$SENDER" || true
alive=yes; kill -0 "$RPID" 2>/dev/null || alive=no
DROPPED=$(nsx nft list table inet soak | sed -n 's/.*counter packets \([0-9]*\) bytes [0-9]* numgen.*counter packets \([0-9]*\) .*/\1 \2/p')

"$PY" - "$OUT" "$alive" "$RSS_BOUND_KIB" "$SYNC_BOUND_US" "$DROPPED" <<'PY'
import csv, sys
out, alive, rss_bound, sync_bound, dropped = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
rows = list(csv.DictReader(open(f"{out}/samples.csv")))
tracks = open(f"{out}/tracks").read().split() if __import__("os").path.exists(f"{out}/tracks") else []
log = open(f"{out}/raopd.log", errors="replace").read()
panics = log.count("panicked")
# The baseline is taken after the first track (60 s): streams allocate once.
steady = [r for r in rows if int(r["t_s"]) >= 70] or rows
rss = [int(r["rss_kib"]) for r in steady]
fds_first = [int(r["fds"]) for r in steady[:6]]
fds_last = [int(r["fds"]) for r in steady[-6:]]
syncs = [abs(int(r["sync_error_us"])) for r in rows if r["sync_error_us"]]
growth = rss[-1] - rss[0] if rss else 0
seen, drop = (dropped.split() + ["0", "0"])[:2]
print(f"soak: {len(rows)} samples over {rows[-1]['t_s'] if rows else 0} s; tracks ok {tracks.count('ok')}, failed {tracks.count('failed')}")
print(f"soak: UDP to the stream ports {seen} packets, {drop} dropped by the 2 % loss rule")
print(f"soak: VmRSS after the first track {rss[0] if rss else '-'} KiB, at the end {rss[-1] if rss else '-'} KiB, min {min(rss) if rss else '-'}, max {max(rss) if rss else '-'} (growth {growth} KiB, bound {rss_bound})")
print(f"soak: open fds max {max(fds_first) if fds_first else '-'} in the first minute, max {max(fds_last) if fds_last else '-'} in the last")
print(f"soak: |sync error| max {max(syncs) if syncs else '-'} us over {len(syncs)} samples while streaming (bound {sync_bound}); panics {panics}; raopd alive {alive}")
bad = []
if alive != "yes": bad.append("raopd exited")
if panics: bad.append("panics in the log")
if growth > rss_bound: bad.append("RSS grew")
if fds_first and fds_last and max(fds_last) > max(fds_first): bad.append("descriptors grew")
if syncs and max(syncs) > sync_bound: bad.append("sync error beyond the bound")
if tracks.count("failed"): bad.append("tracks failed")
print("soak: " + ("FAIL: " + ", ".join(bad) if bad else "PASS"))
sys.exit(1 if bad else 0)
PY
