#!/usr/bin/env bash
# Runs raopd's fuzz targets (fuzz/fuzz_targets/*.rs) with cargo-fuzz and libFuzzer, one
# target at a time, and prints the executions each made.
#
#   scripts/fuzz.sh [--smoke] [--time SECONDS | --runs N] [TARGET...]
#
#   --time SECONDS  per-target time budget (default 60)
#   --runs N        per-target execution budget instead (e.g. --runs 1000000)
#   --smoke         every target for 5 s: proves each builds and runs (CI)
#   TARGET...       only these targets (default: all, as `cargo fuzz list` prints them)
#
# Each target starts from its committed seeds (fuzz/seeds/TARGET, from captures of pyatv and
# PulseAudio streaming to raopd, and from the protocol notes) and keeps what it learns in
# fuzz/corpus/TARGET (not committed). A crash leaves its input in fuzz/artifacts/TARGET/ and
# makes the script exit 1 after the other targets ran; turn each into a regression unit test
# in the module that parses the input (see fuzz/README.md).
#
# Toolchain: cargo-fuzz needs nightly-only rustc flags (-Zsanitizer, sancov). Only stable is
# installed here, so the script runs cargo-fuzz with RUSTC_BOOTSTRAP=1, which lets the stable
# compiler accept them. Builds keep debug assertions and overflow checks on (`-a`), as
# OpenWrt's feed builds do, with AddressSanitizer (cargo-fuzz's default).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo/fuzz"
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

time_budget=60 runs= smoke=0 targets=()
while [ $# -gt 0 ]; do
  case $1 in
    --time) time_budget=${2:?}; runs=; shift 2 ;;
    --runs) runs=${2:?}; shift 2 ;;
    --smoke) smoke=1; time_budget=5; runs=; shift ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked --version "$CARGO_FUZZ_VERSION" cargo-fuzz
fi
# libFuzzer (in libfuzzer-sys) is C++: it needs a C++ compiler (build-essential).
command -v c++ >/dev/null || { echo "fuzz.sh: no C++ compiler; run scripts/setup-build.sh" >&2; exit 2; }

export RUSTC_BOOTSTRAP=1
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)

start=$SECONDS
echo "==> building ${#targets[@]} targets"
cargo fuzz build -a
built=$((SECONDS - start))

declare -A execs secs status
failed=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  budget=(-max_total_time="$time_budget")
  [ -n "$runs" ] && budget=(-runs="$runs")
  max_len=4096
  case $t in rtsp_*|decode) max_len=8192 ;; esac
  echo "==> $t (${budget[*]})"
  log=$(mktemp)
  t0=$SECONDS
  rc=0
  cargo fuzz run -a "$t" "corpus/$t" "seeds/$t" -- \
    "${budget[@]}" -max_len=$max_len -timeout=10 -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" >"$log" 2>&1 || rc=$?
  secs[$t]=$((SECONDS - t0))
  execs[$t]=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ $rc = 0 ]; then
    status[$t]=ok
  else
    status[$t]="CRASH (exit $rc)"
    failed=1
    grep -E '^(==[0-9]+==|thread|panicked|SUMMARY|artifact_prefix|Test unit written|Base64)' "$log" | head -20 || true
    tail -5 "$log"
  fi
  rm -f "$log"
done

echo
echo "==> fuzz results (build ${built} s, total $((SECONDS - start)) s)"
printf '%-16s %14s %8s  %s\n' target executions seconds result
for t in "${targets[@]}"; do
  printf '%-16s %14s %8s  %s\n' "$t" "${execs[$t]:-?}" "${secs[$t]}" "${status[$t]}"
done
exit $failed
