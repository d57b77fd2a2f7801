#!/usr/bin/env bash
# Runs raopd's fuzz targets (fuzz/fuzz_targets/*.rs) with cargo-fuzz and libFuzzer, one
# target at a time, and prints the executions each made.
#
#   scripts/fuzz.sh [--smoke] [--time SECONDS | --runs N] [--sanitizer address|none] [TARGET...]
#
#   --time SECONDS  per-target time budget (default 60)
#   --runs N        per-target execution budget instead (e.g. --runs 1000000)
#   --sanitizer S   address (default: AddressSanitizer) or none
#   --smoke         what CI runs (scripts/test.sh): every target for 5 s, no sanitizer, from
#                   its seeds only (a fresh corpus that is thrown away afterwards)
#   TARGET...       only these targets (default: all, as `cargo fuzz list` prints them)
#
# Each target starts from its committed seeds (fuzz/seeds/TARGET, from captures of pyatv and
# PulseAudio streaming to raopd, and from the protocol notes) and keeps what it learns in
# fuzz/corpus/TARGET (not committed). A crash or a timeout (one input running over 10 s)
# leaves that input in fuzz/artifacts/TARGET/; it, or a run that did not execute every seed,
# makes the script exit 1 after the other targets ran. Turn each crash into a regression unit
# test in the module that parses the input (see fuzz/README.md).
#
# Builds keep debug assertions and overflow checks on (`-a`), as OpenWrt's feed builds do.
# With AddressSanitizer (cargo-fuzz's default), cargo-fuzz needs nightly-only rustc flags
# (-Zsanitizer); only stable is installed here, so the script then runs cargo-fuzz with
# RUSTC_BOOTSTRAP=1, which lets the stable compiler accept them. Without a sanitizer every
# flag is a stable one. The two builds live in different target directories (fuzz/target
# and fuzz/target/no-sanitizer) so that switching between them rebuilds nothing.
#
# Installs what it needs when it is missing: cargo-fuzz (`cargo install`, from crates.io);
# libFuzzer itself is C++ built by libfuzzer-sys, which needs a C++ compiler
# (build-essential, see scripts/setup-build.sh).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo/fuzz"
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

time_budget=60 runs='' smoke=0 sanitizer='' targets=()
while [ $# -gt 0 ]; do
  case $1 in
    --time) time_budget=${2:?}; runs=; shift 2 ;;
    --runs) runs=${2:?}; shift 2 ;;
    --sanitizer) sanitizer=${2:?}; shift 2 ;;
    --smoke) smoke=1; time_budget=5; runs=; shift ;;
    -h|--help) sed -n '2,30p' "$repo/scripts/fuzz.sh" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
# The smoke proves that every target builds, runs its seeds and survives a few seconds of
# mutation; what a sanitizer adds (memory errors in unsafe code, leaks) is left to the long
# runs. Without AddressSanitizer the build needs ~30 % less CPU and a target makes 2 to 9
# times more executions in its 5 s (README.md, "Fuzzing").
if [ -z "$sanitizer" ]; then
  if [ $smoke = 1 ]; then sanitizer=none; else sanitizer=address; fi
fi
case $sanitizer in
  address) build_opts=(-a) ;;
  none)
    # cargo's own target directory unless CARGO_TARGET_DIR moves it (relative to the repo).
    base=${CARGO_TARGET_DIR:-fuzz/target}
    case $base in /*) ;; *) base=$repo/$base ;; esac
    build_opts=(-a -s none --target-dir "$base/no-sanitizer") ;;
  *) echo "fuzz.sh: --sanitizer is address or none, not $sanitizer" >&2; exit 2 ;;
esac

CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked --version "$CARGO_FUZZ_VERSION" cargo-fuzz
fi
command -v c++ >/dev/null || { echo "fuzz.sh: no C++ compiler; run scripts/setup-build.sh" >&2; exit 2; }

[ "$sanitizer" = none ] || export RUSTC_BOOTSTRAP=1
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)

start=$SECONDS
echo "==> building ${#targets[@]} targets (sanitizer: $sanitizer)"
cargo fuzz build "${build_opts[@]}"
built=$((SECONDS - start))

declare -A execs secs status
failed=0 scratch=''
if [ $smoke = 1 ]; then scratch=$(mktemp -d); fi
trap '[ -z "$scratch" ] || rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  corpus=corpus/$t
  if [ $smoke = 1 ]; then corpus=$scratch/$t; fi
  mkdir -p "$corpus" "artifacts/$t"
  budget=(-max_total_time="$time_budget")
  [ -n "$runs" ] && budget=(-runs="$runs")
  max_len=4096
  case $t in rtsp_*|decode) max_len=8192 ;; esac
  echo "==> $t (${budget[*]})"
  log=$(mktemp)
  t0=$SECONDS
  rc=0
  cargo fuzz run "${build_opts[@]}" "$t" "$corpus" "seeds/$t" -- \
    "${budget[@]}" -max_len=$max_len -timeout=10 -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" >"$log" 2>&1 || rc=$?
  secs[$t]=$((SECONDS - t0))
  execs[$t]=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  seeds=$(find "seeds/$t" -type f 2>/dev/null | wc -l || true)
  if [ $rc != 0 ]; then
    status[$t]="CRASH (exit $rc)"
  elif [ "${execs[$t]:-0}" -lt "$seeds" ]; then
    # libFuzzer runs every seed before it mutates: fewer executions means it never got going.
    status[$t]="FAILED (${execs[$t]:-no} executions for $seeds seeds)"
  else
    status[$t]=ok
  fi
  if [ "${status[$t]}" != ok ]; then
    failed=1
    grep -E '^(==[0-9]+==|thread|panicked|SUMMARY|artifact_prefix|Test unit written|Base64)' "$log" | head -20 || true
    tail -5 "$log"
  fi
  rm -f "$log"
done

echo
echo "==> fuzz results (sanitizer: $sanitizer, build ${built} s, total $((SECONDS - start)) s)"
printf '%-16s %14s %8s  %s\n' target executions seconds result
bad=0
for t in "${targets[@]}"; do
  printf '%-16s %14s %8s  %s\n' "$t" "${execs[$t]:-?}" "${secs[$t]}" "${status[$t]}"
  [ "${status[$t]}" = ok ] || bad=$((bad + 1))
done
echo "fuzz: ${#targets[@]} targets, $bad failed"
exit $failed
