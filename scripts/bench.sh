#!/usr/bin/env bash
# bench.sh [--seconds N] [--idle-seconds N] [--smoke] [--mips] [--mips-targets "T..."]
#          [--no-static] [--tracer perf|strace|none] [--keep]
#
# What raopd costs against shairport-sync (Debian 12's package) for the same job, measured in one
# run, in one private network namespace with loopback only:
#
#   idle     both daemons running, nobody streaming, for --idle-seconds (default 60): CPU time,
#            wakeups per second (context switches of all threads), syscalls and epoll waits per
#            second;
#   streams  the same N seconds (--seconds, default 60) of white noise at -6 dBFS, sent once to
#            each receiver by PulseAudio's module-raop-sink (RSA + ALAC) and once by pyatv 0.18
#            (L16, unencrypted), one session at a time: CPU seconds (user + sys), peak RSS during
#            the session, syscalls per audio packet and the most frequent syscalls, and raopd's
#            CPU per thread (from /proc/PID/task/*: the async-io helper thread's share shows);
#   static   the same two streams into raopd linked as the firmware links it (static musl with
#            alsa-lib inside, std built with panic_abort; scripts/build-mips.sh
#            x86_64-unknown-linux-musl), run natively: what a board's raopd costs, without the
#            glibc, libm, libasound and ld.so pages that a Debian build maps (about 2.2 MiB of
#            its RSS, shared with every other process using them); untraced, CPU and peak RSS;
#            x86_64 hosts only (the build is x86_64-unknown-linux-musl), set up like the MIPS
#            builds (scripts/setup-mips.sh: zig, the cross toolchains, alsa-lib's source)
#   --mips   the same two streams into the MIPS release builds under qemu-user (default target
#            mipsel-unknown-linux-musl, the ramips build; scripts/build-mips.sh builds them):
#            guest instructions per minute of audio when qemu's TCG plugin `libinsn.so` is
#            installed, and always the qemu process's CPU seconds per minute of audio.
#
# It prints a table per part, each ratio raopd/shairport-sync, the goals of issue 10 with their
# status, and a markdown summary for the README. Numbers are claims for the README, not
# assertions: the script fails only when a measurement could not be made (a sender failed, a
# receiver wrote less than half the stream, a tool is missing).
#
# Audio packets are counted by nftables in the namespace (UDP to the receiver's port range with
# RTP payload type 96), i.e. what the sender sent, whatever the receiver did with them.
# CPU and peak RSS come from sessions with no tracer attached (/proc/PID/stat, VmHWM reset before
# each session through clear_refs); syscalls from one more session per sender and receiver with
# `perf stat -e raw_syscalls:sys_enter -e syscalls:sys_enter_<name>... -p PID` (counting
# tracepoints: all threads, also threads started later; works in VMs without hardware counters),
# because counting adds 25-45 % to a receiver's CPU time. Where perf cannot count tracepoints,
# `strace -c -f -p PID` counts instead (it slows the process far more; idle syscalls are then
# counted in a second idle window, as its stops would show up as wakeups). shairport-sync runs
# with avahi (its only mDNS backend: a private dbus-daemon and avahi-daemon run in the
# namespace); raopd answers mDNS itself, so its figures include its responder.
#
#   --smoke          5 s streams, 5 s idle, no MIPS, no static build: checks that the whole
#                    bench works (~2 min)
#   --no-static      skip the static musl build and its streams
#   --tracer T       perf, strace or none (default: perf when it counts tracepoints here)
#   --keep           keep the scratch directory (logs, perf output, captured audio); it is also
#                    kept when the bench fails
#
# Needs root (namespaces, perf, apt-get). Installs what is missing: the senders and the pyatv
# venv through scripts/setup-test-deps.sh (with shairport-sync, linux-perf, strace as
# extra packages), and for the static build and --mips the cross toolchains, zig and qemu-user
# through scripts/build-mips.sh (scripts/setup-mips.sh; a few minutes the first time). Builds
# raopd (release, and the static build unless --no-static). Removes everything it started or created when it
# exits, however it exits. Env: RAOPD_TEST_VENV (pyatv venv), CARGO_TARGET_DIR.
set -euo pipefail

SECS=60 IDLE=60 MIPS=0 KEEP=0 TRACER= STATIC=1
MIPS_TARGETS=(mipsel-unknown-linux-musl)
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }
log() { printf '\033[1m[bench +%ss]\033[0m %s\n' "$SECONDS" "$*" >&2; }
usage() { sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

while [ $# -gt 0 ]; do
  case $1 in
    --seconds) SECS=${2:-}; shift 2 ;;
    --idle-seconds) IDLE=${2:-}; shift 2 ;;
    --smoke) SECS=5 IDLE=5 MIPS=0 STATIC=0; shift ;;
    --no-static) STATIC=0; shift ;;
    --mips) MIPS=1; shift ;;
    --mips-targets) read -r -a MIPS_TARGETS <<< "${2:-}"; MIPS=1; shift 2 ;;
    --tracer) TRACER=${2:-}; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) usage ;;
  esac
done
if ! [[ $SECS =~ ^[0-9]+$ ]] || [ "$SECS" -lt 3 ]; then die "--seconds needs a whole number >= 3"; fi
if ! [[ $IDLE =~ ^[0-9]+$ ]] || [ "$IDLE" -lt 1 ]; then die "--idle-seconds needs a whole number >= 1"; fi
case $TRACER in "" | perf | strace | none) ;; *) die "--tracer is perf, strace or none" ;; esac
[ "$(id -u)" = 0 ] || die "must run as root (network namespaces, perf, apt-get)"

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
target_dir=${CARGO_TARGET_DIR:-$repo/target}
case $target_dir in /*) ;; *) target_dir=$repo/$target_dir ;; esac

# Ports: RTSP 5000-5002; UDP away from 6001-6010, where module-raop-sink binds its own.
SP_PORT=5000 SP_UDP=6101 RD_PORT=5001 RD_UDP=6201 MI_PORT=5002 MI_UDP=6301 ST_PORT=5003 ST_UDP=6401
STATIC_TARGET=x86_64-unknown-linux-musl
BYTES_PER_SEC=176400 # S16LE, 44100 Hz, stereo

# --- dependencies and builds ---------------------------------------------------------------------
t_start=$SECONDS
log "dependencies (scripts/setup-test-deps.sh)"
bash scripts/setup-test-deps.sh shairport-sync linux-perf strace nftables >&2 \
  || die "scripts/setup-test-deps.sh failed"
venv=${RAOPD_TEST_VENV:-$target_dir/test-env/venv}
[ -x "$venv/bin/python" ] || die "no pyatv venv at $venv"
for tool in shairport-sync perf strace nft pulseaudio dbus-daemon avahi-daemon python3; do
  command -v "$tool" > /dev/null || die "$tool not found after installing the dependencies"
done

if [ -z "$TRACER" ]; then
  # perf counts software tracepoints even in VMs without hardware counters.
  n=$(perf stat -x, -e raw_syscalls:sys_enter true 2>&1 | awk -F, '/raw_syscalls:sys_enter/ {print $1}')
  if [[ $n =~ ^[0-9]+$ ]] && [ "$n" -gt 0 ]; then TRACER=perf; else TRACER=strace; fi
fi
log "syscalls counted with $TRACER"
ulimit -n 65536 2> /dev/null || true # perf opens one fd per tracepoint per thread

log "building raopd (release)"
cargo build --release --quiet --bin raopd || die "cargo build --release failed"
RAOPD=$target_dir/release/raopd
[ -x "$RAOPD" ] || die "no binary at $RAOPD"
if [ "$STATIC" = 1 ] && [ "$(uname -m)" != x86_64 ]; then
  log "not an x86_64 host: no static musl build to run natively (as --no-static)"
  STATIC=0
fi
if [ "$STATIC" = 1 ]; then
  log "building raopd as the firmware links it: $STATIC_TARGET (scripts/build-mips.sh)"
  bash scripts/build-mips.sh "$STATIC_TARGET" >&2 || die "scripts/build-mips.sh $STATIC_TARGET failed"
  RAOPD_STATIC=$target_dir/$STATIC_TARGET/release/raopd
  [ -x "$RAOPD_STATIC" ] || die "no binary at $RAOPD_STATIC"
fi
if [ "$MIPS" = 1 ]; then
  log "building the MIPS targets: ${MIPS_TARGETS[*]} (scripts/build-mips.sh)"
  bash scripts/build-mips.sh "${MIPS_TARGETS[@]}" >&2 || die "scripts/build-mips.sh failed"
  for t in "${MIPS_TARGETS[@]}"; do
    [ -x "$target_dir/$t/release/raopd" ] || die "no MIPS binary for $t"
  done
fi
t_build=$((SECONDS - t_start))

# --- scratch space, namespace and cleanup ----------------------------------------------------------
work=$(mktemp -d /tmp/raopd-bench.XXXXXX)
chmod 755 "$work"
NS=raopd-bench-$$
pids=()
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill -TERM "$p" 2> /dev/null || true; done
  sleep 0.3
  # Whatever is still inside the namespace belongs to this run.
  if ip netns list 2> /dev/null | grep -qw "$NS"; then
    for p in $(ip netns pids "$NS" 2> /dev/null); do kill -KILL "$p" 2> /dev/null || true; done
    ip netns delete "$NS" 2> /dev/null || true
  fi
  if [ "$KEEP" = 1 ] || [ "$rc" != 0 ]; then
    echo "bench: files kept in $work" >&2
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$NS"
nsx() { ip netns exec "$NS" "$@"; }
nsx ip link set lo up multicast on
nsx ip route replace 224.0.0.0/4 dev lo

# The packets each receiver was sent: RTP payload type 96 (audio) to its UDP ports.
nsx nft -f - << EOF
table inet raopdbench {
  counter shairport { }
  counter raopd { }
  counter mips { }
  counter static { }
  chain input {
    type filter hook input priority 0; policy accept;
    udp dport $SP_UDP-$((SP_UDP + 9)) @th,73,7 96 counter name "shairport"
    udp dport $RD_UDP-$((RD_UDP + 99)) @th,73,7 96 counter name "raopd"
    udp dport $MI_UDP-$((MI_UDP + 99)) @th,73,7 96 counter name "mips"
    udp dport $ST_UDP-$((ST_UDP + 99)) @th,73,7 96 counter name "static"
  }
}
EOF
packets() { nsx nft list counter inet raopdbench "$1" | awk '/packets/ {print $2}'; }

cat > "$work/dbus.conf" << EOF
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
[ -S "$work/dbus.sock" ] || die "the namespace's dbus-daemon did not start"
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$work/dbus.sock

cat > "$work/avahi.conf" << 'EOF'
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
# shellcheck disable=SC2016 # $0 is expanded by the inner bash
nsx unshare -m bash -c 'mount --make-rprivate / && mkdir -p /run/avahi-daemon &&
  mount -t tmpfs none /run/avahi-daemon &&
  exec avahi-daemon -f "$0" --no-drop-root --no-chroot --no-rlimits' "$work/avahi.conf" \
  > "$work/avahi.log" 2>&1 < /dev/null &
pids+=($!)
for _ in $(seq 50); do grep -qs "Server startup complete" "$work/avahi.log" && break; sleep 0.1; done
grep -q "Server startup complete" "$work/avahi.log" || { cat "$work/avahi.log" >&2; die "avahi-daemon did not start"; }

log "namespace $NS up"
# --- input: SECS of white noise at -6 dBFS, then 2 s of silence ------------------------------------
python3 - "$work/noise.wav" "$SECS" << 'EOF'
import random, struct, sys
path, secs = sys.argv[1], int(sys.argv[2])
rng = random.Random(0x5241_4F50)
frames = secs * 44100
# 16-bit little-endian samples in -16384..16383: random bytes, the high byte's top bit dropped
# and its sign bit copied down (arithmetic shift right by one of a full-scale sample).
raw = bytearray(rng.randbytes(4 * frames))
for i in range(1, len(raw), 2):
    b = raw[i]
    raw[i] = (b >> 1) | (b & 0x80)
raw += bytes(2 * 44100 * 4)
hdr = b"RIFF" + struct.pack("<I", 36 + len(raw)) + b"WAVEfmt " + struct.pack(
    "<IHHIIHH", 16, 1, 2, 44100, 44100 * 4, 4, 16) + b"data" + struct.pack("<I", len(raw))
open(path, "wb").write(hdr + raw)
EOF

# --- helpers: snapshots of /proc, tracers, receivers, senders --------------------------------------
# The measuring and reporting half lives in Python (one file, written here).
helper=$work/bench.py
cat > "$helper" << 'PYEOF'
import json, os, re, sys

def read(path):
    with open(path) as f:
        return f.read()

def stat_fields(text):
    # Fields after "(comm)"; comm may hold spaces and parentheses.
    return text[text.rindex(")") + 2:].split()

def snap(pid):
    """utime/stime (clock ticks) of the process, its peak RSS, and per thread: name, ticks,
    run time (ns, schedstat) and context switches."""
    f = stat_fields(read(f"/proc/{pid}/stat"))
    out = {"pid": str(pid), "utime": int(f[11]), "stime": int(f[12]), "tasks": {}}
    for line in read(f"/proc/{pid}/status").splitlines():
        k, _, v = line.partition(":")
        if k in ("VmHWM", "VmRSS"):
            out[k] = int(v.split()[0])
    for tid in os.listdir(f"/proc/{pid}/task"):
        d = f"/proc/{pid}/task/{tid}"
        try:
            tf = stat_fields(read(f"{d}/stat"))
            t = {"comm": read(f"{d}/comm").strip(), "utime": int(tf[11]), "stime": int(tf[12]),
                 "run_ns": int(read(f"{d}/schedstat").split()[0])}
            for line in read(f"{d}/status").splitlines():
                k, _, v = line.partition(":")
                if k in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
                    t[k] = int(v)
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue  # the thread ended meanwhile
        out["tasks"][tid] = t
    return out

def perf_counts(path):
    """{event: count} from `perf stat -x,` output; the filtered sys_exit is called eagain."""
    counts = {}
    if not os.path.exists(path):
        return counts
    for line in read(path).splitlines():
        p = line.split(",")
        if len(p) < 3 or line.startswith("#"):
            continue
        try:
            v = float(p[0])
        except ValueError:
            continue
        ev = p[2]
        if ev == "raw_syscalls:sys_exit":
            ev = "eagain"
        counts[ev] = counts.get(ev, 0) + v
    return counts

def strace_counts(path):
    """{syscall: calls} and the totals from `strace -c` output."""
    counts, errors = {}, 0
    if not os.path.exists(path):
        return counts, errors
    for line in read(path).splitlines():
        p = line.split()
        if len(p) >= 5 and re.match(r"^[\d.]+$", p[0]) and p[-1] != "total":
            calls = int(p[3])
            errs = int(p[4]) if len(p) == 6 else 0
            counts[p[-1]] = calls
            errors += errs
    return counts, errors

def load_phase(d):
    meta = dict(l.split("=", 1) for l in read(f"{d}/meta").split("\n") if "=" in l)
    b, a = json.loads(read(f"{d}/before.json")), json.loads(read(f"{d}/after.json"))
    tck = os.sysconf("SC_CLK_TCK")
    ph = {"meta": meta, "user": (a["utime"] - b["utime"]) / tck,
          "sys": (a["stime"] - b["stime"]) / tck, "hwm_kib": a.get("VmHWM", 0)}
    ph["cpu"] = ph["user"] + ph["sys"]
    # For the idle phase: CPU since exec (ticks; run time of the live threads when finer).
    ph["startup_cpu"] = max((b["utime"] + b["stime"]) / tck,
                            sum(t["run_ns"] for t in b["tasks"].values()) / 1e9)
    threads, wake = [], 0
    for tid, t in a["tasks"].items():
        t0 = b["tasks"].get(tid, {"utime": 0, "stime": 0, "run_ns": 0,
                                  "voluntary_ctxt_switches": 0, "nonvoluntary_ctxt_switches": 0})
        threads.append((tid, t["comm"], (t["run_ns"] - t0["run_ns"]) / 1e6,
                        (t["utime"] + t["stime"] - t0["utime"] - t0["stime"])))
        wake += sum(t.get(k, 0) - t0.get(k, 0)
                    for k in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"))
    ph["threads"] = sorted(threads, key=lambda x: -x[2])
    # Share of the threads other than the main one (raopd: async-io's helper thread).
    total = sum(t[2] for t in threads)
    ph["helper_share"] = (100 * sum(t[2] for t in threads if t[0] != a["pid"]) / total) if total else 0.0
    ph["ctxsw"] = wake
    ph["secs"] = float(meta.get("wall", "0"))
    ph["packets"] = int(meta.get("packets", "0") or 0)
    ph["bytes"] = int(meta.get("bytes", "0") or 0)
    ph["received"] = meta.get("received", "")
    tr = meta.get("tracer", "none")
    ph["tracer"] = tr
    if tr == "perf":
        c = perf_counts(f"{d}/trace.txt")
        ph["syscalls"] = c.get("raw_syscalls:sys_enter")
        ph["eagain"] = c.get("eagain")
        ph["task_clock_ms"] = c.get("task-clock")
        ph["perf_ctxsw"] = c.get("context-switches")
        ph["by_call"] = {k.split("sys_enter_", 1)[1]: v for k, v in c.items()
                         if k.startswith("syscalls:sys_enter_") and v > 0}
        if ph["syscalls"] is not None:
            ph["by_call"]["other"] = ph["syscalls"] - sum(ph["by_call"].values())
    elif tr == "strace":
        by, errs = strace_counts(f"{d}/trace.txt")
        ph["by_call"], ph["eagain"] = by, errs
        ph["syscalls"] = sum(by.values()) if by else None
    return ph

def fmt(v, spec, unit=""):
    if v is None:
        width = re.match(r"\d*", spec).group()
        return "—".rjust(int(width)) if width else "—"
    return format(v, spec) + unit

def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b

def per_packet(ph, key):
    v, pk = ph.get(key), ph["packets"]
    return v / pk if v is not None and pk else None

def top_calls(ph, n=8):
    by = ph.get("by_call") or {}
    items = sorted(by.items(), key=lambda kv: -kv[1])[:n]
    pk = ph["packets"] or None
    return ", ".join(f"{k} {v / pk:.2f}" if pk else f"{k} {int(v)}" for k, v in items)

SENDERS = (("pulse", "PulseAudio RSA+ALAC"), ("pyatv", "pyatv L16"))

def report(work):
    pd = os.path.join(work, "phases")
    phases = {n: load_phase(os.path.join(pd, n)) for n in sorted(os.listdir(pd))}
    info = dict(l.split("=", 1) for l in read(os.path.join(work, "info")).split("\n") if "=" in l)
    secs, idle, tracer = int(info["secs"]), int(info["idle"]), info["tracer"]
    out = []
    p = out.append
    p(f"\n== raopd {info['raopd_version']} vs {info['shairport_version']}: {secs} s streams, "
      f"{idle} s idle; syscalls counted with {tracer} ==")

    # Idle.
    p(f"\n-- idle: both daemons running, nobody streaming, {idle} s --")
    p(f"{'receiver':<16}{'start-up CPU ms':>16}{'idle CPU ms':>12}{'wakeups/s':>11}{'syscalls/s':>12}{'epoll waits/s':>15}")
    idle_rows = {}
    for rx in ("raopd", "shairport"):
        ph = phases.get(f"idle-{rx}")
        if not ph:
            continue
        cpu_ms = ph.get("task_clock_ms")
        if cpu_ms is None:
            cpu_ms = ph["cpu"] * 1000
        tr = phases.get(f"idle-trace-{rx}", ph)
        by = tr.get("by_call") or {}
        ep = sum(v for k, v in by.items() if k.startswith(("epoll_wait", "epoll_pwait"))) if by else None
        t, tt = ph["secs"] or idle, tr["secs"] or idle
        row = {"startup_ms": ph["startup_cpu"] * 1000, "cpu_ms": cpu_ms, "wake": ph["ctxsw"] / t,
               "sys": tr["syscalls"] / tt if tr.get("syscalls") is not None else None,
               "epoll": ep / tt if ep is not None else None}
        idle_rows[rx] = row
        p(f"{rx:<16}{row['startup_ms']:16.0f}{row['cpu_ms']:12.1f}{row['wake']:11.2f}"
          f"{fmt(row['sys'], '12.2f')}{fmt(row['epoll'], '15.2f')}")
    for rx in ("raopd", "shairport"):
        ph = phases.get(f"idle-trace-{rx}", phases.get(f"idle-{rx}"))
        if ph and ph.get("by_call"):
            p(f"  {rx} idle syscalls: " + ", ".join(
                f"{k} {int(v)}" for k, v in sorted(ph["by_call"].items(), key=lambda kv: -kv[1])[:6] if v))
    p("  (start-up: CPU from exec until 3 s after the RTSP port opened; wakeups: context switches of all threads)")

    # Streams.
    streams = {}
    for sender, label in SENDERS:
        rd, sp = phases.get(f"{sender}-raopd"), phases.get(f"{sender}-shairport")
        if not rd or not sp:
            continue
        rdt, spt = phases.get(f"{sender}-raopd-trace"), phases.get(f"{sender}-shairport-trace")
        streams[sender] = (rd, sp, rdt, spt)
        p(f"\n-- {label}: {secs} s of audio into each receiver --")
        p(f"{'receiver':<16}{'user s':>8}{'sys s':>8}{'CPU s':>8}{'peak RSS KiB':>14}{'packets':>9}"
          f"{'audio s':>9}{'syscalls':>10}{'/packet':>9}{'EAGAIN/pk' if tracer == 'perf' else 'failed/pk':>11}")
        st = phases.get(f"{sender}-static")
        rows = [("raopd", rd, rdt), ("shairport-sync", sp, spt)]
        if st:
            rows.insert(1, ("raopd static", st, None))
        for name, ph, tr in rows:
            tr = tr or {"packets": 0}
            p(f"{name:<16}{ph['user']:8.2f}{ph['sys']:8.2f}{ph['cpu']:8.2f}{ph['hwm_kib']:14d}"
              f"{ph['packets']:9d}{ph['bytes'] / 176400:9.1f}{fmt(tr.get('syscalls'), '10.0f')}"
              f"{fmt(per_packet(tr, 'syscalls'), '9.2f')}{fmt(per_packet(tr, 'eagain'), '11.2f')}")
        p(f"ratio raopd/shairport-sync: CPU {fmt(ratio(rd['cpu'], sp['cpu']), '.3f')}, "
          f"peak RSS {fmt(ratio(rd['hwm_kib'], sp['hwm_kib']), '.3f')}, syscalls/packet "
          f"{fmt(ratio(per_packet(rdt or {'packets': 0}, 'syscalls'), per_packet(spt or {'packets': 0}, 'syscalls')), '.3f')}")
        if st:
            p(f"ratio raopd static (musl, the firmware's linking)/shairport-sync: CPU "
              f"{fmt(ratio(st['cpu'], sp['cpu']), '.3f')}, peak RSS {fmt(ratio(st['hwm_kib'], sp['hwm_kib']), '.3f')}")
        total = sum(t[2] for t in rd["threads"])
        p("  raopd per thread (tid name: CPU ms, share):  " + ";  ".join(
            f"{tid} {comm}: {ms:.0f} ms, {100 * ms / total if total else 0:.1f} %"
            for tid, comm, ms, _ in rd["threads"]))
        for name, tr in (("raopd", rdt), ("shairport-sync", spt)):
            if tr and tr.get("by_call"):
                p(f"  {name} syscalls per packet: {top_calls(tr)}")
        if rd["received"]:
            p(f"  raopd's own count (stream summary): received={rd['received']}; on the wire: {rd['packets']}")
    if streams:
        p("  (CPU and RSS from untraced sessions; syscalls from a second session with the tracer"
          " attached; peak RSS is the session's own: VmHWM reset before it)")

    # MIPS.
    mips = [n for n in phases if n.startswith("mips-")]
    if mips:
        p("\n-- MIPS builds under qemu-user: per minute of audio --")
        p(f"{'target':<28}{'sender':<8}{'qemu CPU s/min':>15}{'guest insns/min':>17}{'qemu peak RSS KiB':>19}")
        for n in mips:
            ph = phases[n]
            mins = ph["bytes"] / 176400 / 60 or None
            ins = ph["meta"].get("insns")
            ph["cpu_per_min"] = ph["cpu"] / mins if mins else None
            ph["ins_per_min"] = int(ins) / mins if ins and mins else None
            p(f"{ph['meta']['target']:<28}{ph['meta']['sender']:<8}{fmt(ph['cpu_per_min'], '15.2f')}"
              f"{fmt(ph['ins_per_min'], '17.3e')}{ph['hwm_kib']:19d}")
        p("  (per minute of audio written; qemu CPU over the session; guest instructions, where"
          " qemu's libinsn plugin is installed, over the daemon's whole life: one session)")

    # Goals of issue 10: printed, never asserted.
    p("\n-- goals (issue 10) --")
    def goal(text, value, ok):
        p(f"{'met    ' if ok else 'unknown' if ok is None else 'NOT met'}  {text}: {value}")
    if "pulse" in streams:
        rd, sp, rdt, _ = streams["pulse"]
        st = phases.get("pulse-static")
        builds = [("Debian build (glibc, dynamic)", rd)]
        if st:
            builds.append(("as the firmware links it (static musl)", st))
        for what, ph in builds:
            r = ratio(ph["cpu"], sp["cpu"])
            goal(f"CPU per session of ALAC+RSA <= 0.15x shairport-sync's (openairplay1: 0.36x), {what}",
                 fmt(r, ".3f", "x"), None if r is None else r <= 0.15)
        for what, ph in builds:
            r = ratio(ph["hwm_kib"], sp["hwm_kib"])
            goal(f"peak RSS <= 0.15x shairport-sync's, {what}", fmt(r, ".3f", "x"),
                 None if r is None else r <= 0.15)
        spp = per_packet(rdt, "syscalls") if rdt else None
        goal("<= 4 syscalls per audio packet (whole session, all threads)", fmt(spp, ".2f"),
             None if spp is None else spp <= 4)
        goal("threads other than the main one < 1 % of raopd's CPU during the stream",
             f"{rd['helper_share']:.1f} %", rd["helper_share"] < 1)
    if "raopd" in idle_rows:
        w = idle_rows["raopd"]["wake"]
        goal("no more than 1 wakeup per second while idle", f"{w:.2f}/s", w <= 1)

    # Markdown for the README.
    p("\n-- summary (markdown) --\n")
    p(f"`scripts/bench.sh`: {secs} s of white noise per stream, one receiver at a time, both in one "
      f"network namespace (loopback); {info['shairport_version']} (Debian 12) with `-o stdout`, "
      f"raopd {info['raopd_version']} with `--output pipe:`. CPU = user + sys of the session, "
      f"syscalls counted with {tracer} in a second session, packets counted on the wire.\n")
    p("| | raopd | shairport-sync | ratio |")
    p("|---|---|---|---|")
    for sender, label in SENDERS:
        if sender not in streams:
            continue
        rd, sp, rdt, spt = streams[sender]
        a = per_packet(rdt, "syscalls") if rdt else None
        b = per_packet(spt, "syscalls") if spt else None
        p(f"| CPU per {secs} s, {label} | {rd['cpu']:.2f} s | {sp['cpu']:.2f} s | {fmt(ratio(rd['cpu'], sp['cpu']), '.2f', '×')} |")
        p(f"| peak RSS, {label} | {rd['hwm_kib'] / 1024:.1f} MiB | {sp['hwm_kib'] / 1024:.1f} MiB | {fmt(ratio(rd['hwm_kib'], sp['hwm_kib']), '.2f', '×')} |")
        p(f"| syscalls per audio packet, {label} | {fmt(a, '.1f')} | {fmt(b, '.1f')} | {fmt(ratio(a, b), '.2f', '×')} |")
        p(f"| raopd's helper thread(s), {label} | {rd['helper_share']:.1f} % of its CPU | | |")
        st = phases.get(f"{sender}-static")
        if st:
            p(f"| CPU per {secs} s, {label}, raopd static (musl) | {st['cpu']:.2f} s | {sp['cpu']:.2f} s | {fmt(ratio(st['cpu'], sp['cpu']), '.2f', '×')} |")
            p(f"| peak RSS, {label}, raopd static (musl) | {st['hwm_kib'] / 1024:.1f} MiB | {sp['hwm_kib'] / 1024:.1f} MiB | {fmt(ratio(st['hwm_kib'], sp['hwm_kib']), '.2f', '×')} |")
    r, s = idle_rows.get("raopd"), idle_rows.get("shairport")
    if r and s:
        p(f"| start-up CPU | {r['startup_ms']:.0f} ms | {s['startup_ms']:.0f} ms | {fmt(ratio(r['startup_ms'], s['startup_ms']), '.2f', '×')} |")
        p(f"| idle CPU over {idle} s | {r['cpu_ms']:.1f} ms | {s['cpu_ms']:.1f} ms | {fmt(ratio(r['cpu_ms'], s['cpu_ms']), '.2f', '×')} |")
        p(f"| idle wakeups per second | {r['wake']:.2f} | {s['wake']:.2f} | {fmt(ratio(r['wake'], s['wake']), '.2f', '×')} |")
    for n in mips:
        ph = phases[n]
        label = dict(SENDERS)[ph["meta"]["sender"]]
        what = f"{ph['ins_per_min']:.3g} guest instructions, " if ph.get("ins_per_min") else ""
        p(f"| {ph['meta']['target']} under qemu-user, {label}, per minute of audio | "
          f"{what}{fmt(ph['cpu_per_min'], '.2f')} s qemu CPU | | |")
    print("\n".join(out))

if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "snap":
        json.dump(snap(sys.argv[2]), sys.stdout)
    elif cmd == "report":
        report(sys.argv[2])
PYEOF

snap() { python3 "$helper" snap "$1" > "$2" || die "cannot read /proc/$1 (did the receiver die?)"; }

PERF_EVENTS=(-e task-clock -e context-switches -e raw_syscalls:sys_enter
  -e raw_syscalls:sys_exit --filter 'ret == -11')
# The breakdown covers the calls an event loop or a player thread makes (not all ~360
# syscalls: perf needs ~40 ms per tracepoint to detach); the rest shows up as "other".
for c in epoll_wait epoll_pwait epoll_pwait2 epoll_ctl poll ppoll select pselect6 recvfrom recvmsg \
  recvmmsg sendto sendmsg sendmmsg read write writev pwrite64 accept4 futex timerfd_settime \
  clock_nanosleep nanosleep clock_gettime mprotect rt_sigprocmask getpid gettid ioctl getrandom \
  madvise mmap munmap brk; do
  [ -d "/sys/kernel/tracing/events/syscalls/sys_enter_$c" ] && PERF_EVENTS+=(-e "syscalls:sys_enter_$c")
done
# tracer_start KIND PID OUT: counts PID's syscalls (all its threads) into OUT until tracer_stop.
tracer_start() {
  tr_pid=
  case $1 in
    perf) perf stat -x, -o "$3" "${PERF_EVENTS[@]}" -p "$2" 2> "$3.err" & ;;
    strace) strace -c -f -qq -p "$2" -o "$3" 2> "$3.err" & ;;
    none) return 0 ;;
  esac
  tr_pid=$!
  pids+=("$tr_pid")
  # Attached once the tracer has opened its counters (perf: hundreds of fds) and still runs.
  sleep 1
  kill -0 "$tr_pid" 2> /dev/null || { cat "$3.err" >&2; die "$1 could not attach to pid $2"; }
}
tracer_stop() { # tracer_stop PID...: SIGINT makes perf and strace print their counts and exit
  local p
  for p in "$@"; do [ -n "$p" ] && kill -INT "$p" 2> /dev/null; done
  for p in "$@"; do [ -n "$p" ] && { wait "$p" 2> /dev/null || true; }; done
  return 0
}

# start_rx NAME PORT COMMAND...: starts a receiver in the namespace, waits for its RTSP port.
# Sets rx_pid (the receiver's own pid: ip netns exec execs it; qemu's for a MIPS build).
start_rx() {
  local name=$1 port=$2
  shift 2
  ip netns exec "$NS" "$@" > "$work/$name.stdout" 2> "$work/$name.log" < /dev/null &
  rx_pid=$!
  pids+=("$rx_pid")
  for _ in $(seq 300); do
    nsx ss -Hltn "sport = :$port" | grep -q . && return 0
    kill -0 "$rx_pid" 2> /dev/null || break
    sleep 0.1
  done
  tail -20 "$work/$name.log" >&2
  die "$name did not listen on port $port"
}
stop_rx() { # stop_rx PID
  kill -TERM "$1" 2> /dev/null || true
  for _ in $(seq 100); do kill -0 "$1" 2> /dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2> /dev/null || true
  wait "$1" 2> /dev/null || true
}

# send SENDER PORT RECEIVER LOGDIR: streams the noise file once; exit status of the sender.
send() {
  local sender=$1 port=$2 rx=$3 dir=$4 extra
  case $sender in
    pulse)
      nsx timeout $((SECS + 90)) bash tests/senders/pulse_stream.sh 127.0.0.1 "$port" \
        "$work/noise.wav" "$dir/pulse" --encryption RSA --codec ALAC --sink-volume 100 --tail 3
      ;;
    pyatv)
      # shairport-sync 3.3.8 crashes on pyatv's stock SDP (its a=fmtp line); raopd gets it as is,
      # with 0 dB (software volume at unity, as shairport-sync with ignore_volume_control).
      extra=(--volume-db 0)
      [ "$rx" = shairport ] && extra=(--no-fmtp)
      nsx timeout $((SECS + 90)) "$venv/bin/python" tests/senders/pyatv_stream.py 127.0.0.1 \
        "$port" "$work/noise.wav" "${extra[@]}"
      ;;
  esac
}

# stream_phase PHASE RECEIVER SENDER TRACER PID PORT COUNTER OUTFILE LOG: one measured session.
# PulseAudio 16.1's RAOP sink sometimes aborts at the start of a stream (an assertion in its I/O
# thread); such a session is discarded and repeated, up to three times.
stream_phase() {
  local phase=$1 rx=$2 sender=$3 tracer=$4 pid=$5 port=$6 counter=$7 out=$8 rxlog=$9
  local dir=$work/phases/$phase try rc b0 b1 k0 k1 l0 t0 t1 received
  for try in 1 2 3; do
    rm -rf "$dir"
    mkdir -p "$dir"
    log "$phase: $SECS s from $sender into $rx${tracer:+ ($tracer)}"
    echo 5 > "/proc/$pid/clear_refs" # VmHWM := VmRSS: the peak of this session alone
    b0=$(stat -c %s "$out") k0=$(packets "$counter") l0=$(wc -l < "$rxlog")
    snap "$pid" "$dir/before.json"
    tracer_start "$tracer" "$pid" "$dir/trace.txt"
    t0=$(date +%s.%N)
    rc=0
    send "$sender" "$port" "$rx" "$dir" > "$dir/sender.log" 2>&1 || rc=$?
    sleep 1 # the receiver finishes the session (TEARDOWN, stream summary)
    t1=$(date +%s.%N)
    tracer_stop "$tr_pid"
    kill -0 "$pid" 2> /dev/null || { tail -20 "$rxlog" >&2; die "$rx died during $phase"; }
    snap "$pid" "$dir/after.json"
    b1=$(stat -c %s "$out") k1=$(packets "$counter")
    [ "$rc" = 0 ] && break
    if [ "$sender" = pulse ] && grep -q "Assertion 'pollfd' failed" "$dir/sender.log" && [ "$try" -lt 3 ]; then
      log "$phase: PulseAudio's RAOP sink aborted at the start (its known race); again"
      sleep 2
      continue
    fi
    cat "$dir/sender.log" >&2
    die "$phase: the $sender stream to $rx failed (exit $rc)"
  done
  [ "$b1" -ge "$b0" ] || b0=0 # the output was reopened (truncated)
  received=$(tail -n +"$((l0 + 1))" "$rxlog" | grep -o 'stream summary:.* received=[0-9]*' | tail -1 |
    sed 's/.*received=//' || true)
  {
    echo "receiver=$rx"
    echo "sender=$sender"
    echo "tracer=$tracer"
    echo "wall=$(awk "BEGIN {print $t1 - $t0}")"
    echo "bytes=$((b1 - b0))"
    echo "packets=$((k1 - k0))"
    echo "received=$received"
  } > "$dir/meta"
  # Less than half the stream written means the receiver did not really play it.
  [ $((b1 - b0)) -ge $((SECS * BYTES_PER_SEC / 2)) ] ||
    { tail -20 "$rxlog" >&2; die "$phase: $rx wrote only $((b1 - b0)) bytes for $SECS s of audio"; }
  [ $((k1 - k0)) -gt 0 ] || die "$phase: no audio packets counted on the wire"
}

# --- the two receivers -----------------------------------------------------------------------------
cat > "$work/shairport.conf" << EOF
general = { name = "bench-shairport"; port = $SP_PORT; udp_port_base = $SP_UDP; udp_port_range = 10;
  mdns_backend = "avahi"; interpolation = "basic"; ignore_volume_control = "yes"; };
sessioncontrol = { session_timeout = 20; };
EOF
log "starting shairport-sync and raopd in namespace $NS"
start_rx shairport "$SP_PORT" shairport-sync -c "$work/shairport.conf" -u -o stdout
sp_pid=$rx_pid
# RUST_LOG=info: raopd logs one `stream summary:` line per stream (and a few per session).
start_rx raopd "$RD_PORT" env RUST_LOG=info "$RAOPD" --name bench-raopd --port "$RD_PORT" \
  --udp-port-base "$RD_UDP" --output "pipe:$work/raopd.raw" --control-socket "$work/raopd.sock"
rd_pid=$rx_pid
# env execs raopd, so rx_pid is raopd's own pid.
[ "$(cat "/proc/$rd_pid/comm")" = raopd ] || die "pid $rd_pid is $(cat "/proc/$rd_pid/comm"), not raopd"
{
  echo "secs=$SECS"
  echo "idle=$IDLE"
  echo "tracer=$TRACER"
  echo "raopd_version=$("$RAOPD" --version 2>&1 | head -1 | sed 's/^raopd //')"
  echo "shairport_version=shairport-sync $(shairport-sync -V 2>&1 | head -1 | cut -d- -f1)"
} > "$work/info"
mkdir -p "$work/phases"

# --- idle --------------------------------------------------------------------------------------------
sleep 3 # past start-up and the first mDNS announcements
# idle_phase SUFFIX TRACER SECONDS: both daemons idle, measured at once.
idle_phase() {
  local suffix=$1 tracer=$2 secs=$3 rx t0 t1 rd_tr sp_tr
  log "idle$suffix: $secs s, both daemons running, nobody streaming${tracer:+ ($tracer)}"
  for rx in raopd shairport; do mkdir -p "$work/phases/idle$suffix-$rx"; done
  snap "$rd_pid" "$work/phases/idle$suffix-raopd/before.json"
  snap "$sp_pid" "$work/phases/idle$suffix-shairport/before.json"
  tracer_start "$tracer" "$rd_pid" "$work/phases/idle$suffix-raopd/trace.txt"
  rd_tr=$tr_pid
  tracer_start "$tracer" "$sp_pid" "$work/phases/idle$suffix-shairport/trace.txt"
  sp_tr=$tr_pid
  t0=$(date +%s.%N)
  sleep "$secs"
  t1=$(date +%s.%N)
  tracer_stop "$rd_tr" "$sp_tr"
  snap "$rd_pid" "$work/phases/idle$suffix-raopd/after.json"
  snap "$sp_pid" "$work/phases/idle$suffix-shairport/after.json"
  for rx in raopd shairport; do
    printf 'receiver=%s\ntracer=%s\nwall=%s\n' "$rx" "$tracer" "$(awk "BEGIN {print $t1 - $t0}")" \
      > "$work/phases/idle$suffix-$rx/meta"
  done
}
# perf's counting does not disturb an idle daemon; strace's ptrace stops would show up as
# wakeups, so with strace the syscalls are counted in a second idle window (at most 30 s).
if [ "$TRACER" = strace ]; then
  idle_phase "" none "$IDLE"
  idle_phase -trace strace $((IDLE < 30 ? IDLE : 30))
else
  idle_phase "" "$TRACER" "$IDLE"
fi

# --- streams -----------------------------------------------------------------------------------------
# First the sessions that measure CPU and memory, untraced: counting syscalls with perf adds
# 25-45 % to a receiver's CPU time (strace far more). Then one more session per sender and
# receiver with the syscall tracer attached.
for sender in pulse pyatv; do
  stream_phase "$sender-shairport" shairport "$sender" none "$sp_pid" "$SP_PORT" shairport \
    "$work/shairport.stdout" "$work/shairport.log"
  stream_phase "$sender-raopd" raopd "$sender" none "$rd_pid" "$RD_PORT" raopd \
    "$work/raopd.raw" "$work/raopd.log"
done
if [ "$TRACER" != none ]; then
  for sender in pulse pyatv; do
    stream_phase "$sender-shairport-trace" shairport "$sender" "$TRACER" "$sp_pid" "$SP_PORT" shairport \
      "$work/shairport.stdout" "$work/shairport.log"
    stream_phase "$sender-raopd-trace" raopd "$sender" "$TRACER" "$rd_pid" "$RD_PORT" raopd \
      "$work/raopd.raw" "$work/raopd.log"
  done
fi

# --- raopd linked as the firmware links it, natively ----------------------------------------------
if [ "$STATIC" = 1 ]; then
  stop_rx "$sp_pid" # shairport-sync's sessions are done: as quiet a machine as for the others
  sp_pid=
  start_rx raopd-static "$ST_PORT" env RUST_LOG=info "$RAOPD_STATIC" --name bench-static \
    --port "$ST_PORT" --udp-port-base "$ST_UDP" --output "pipe:$work/static.raw" \
    --control-socket "$work/static.sock"
  st_pid=$rx_pid
  for sender in pulse pyatv; do
    stream_phase "$sender-static" raopd-static "$sender" none "$st_pid" "$ST_PORT" static \
      "$work/static.raw" "$work/raopd-static.log"
  done
  stop_rx "$st_pid"
fi

# --- MIPS under qemu-user ------------------------------------------------------------------------------
if [ "$MIPS" = 1 ]; then
  [ -z "$sp_pid" ] || stop_rx "$sp_pid" # keep the machine quiet for the emulated daemon
  plugin=$(dpkg -L qemu-user 2> /dev/null | grep -m1 '/libinsn\.so$' || true)
  if [ -n "$plugin" ]; then log "guest instructions counted with $plugin"; else
    log "qemu-user ships no libinsn.so here: reporting the qemu process's CPU time only"
  fi
  for t in "${MIPS_TARGETS[@]}"; do
    read -r -a qemu <<< "$(bash scripts/qemu-cmd.sh "$t")"
    for sender in pulse pyatv; do
      name=mips-$t-$sender
      qlog=$work/$name.log
      pl=()
      [ -n "$plugin" ] && pl=(-plugin "$plugin" -d plugin -D "$work/$name.insn")
      # A fresh daemon per session: the plugin reports its count when qemu exits.
      start_rx "$name" "$MI_PORT" env RUST_LOG=info "${qemu[@]}" "${pl[@]}" \
        "$target_dir/$t/release/raopd" --name bench-mips --port "$MI_PORT" --udp-port-base "$MI_UDP" \
        --output "pipe:$work/$name.raw" --control-socket "$work/$name.sock"
      mi_pid=$rx_pid
      stream_phase "$name" "$t" "$sender" none "$mi_pid" "$MI_PORT" mips "$work/$name.raw" "$qlog"
      stop_rx "$mi_pid"
      { echo "target=$t"; [ -n "$plugin" ] && grep -o 'insns: [0-9]*' "$work/$name.insn" | tail -1 |
        sed 's/insns: /insns=/'; } >> "$work/phases/$name/meta"
    done
  done
fi

# --- report ----------------------------------------------------------------------------------------
log "done measuring"
python3 "$helper" report "$work" | tee "$work/report.txt"
echo
echo "bench: $((SECONDS - t_start)) s in all (dependencies and builds $t_build s)"
