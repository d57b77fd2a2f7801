#!/usr/bin/env bash
# Runs every check of the project, as root on Debian 12: installs the test dependencies, then
# `cargo fmt --check`, `cargo clippy` (warnings are errors) and `cargo test` (unit tests and the
# end-to-end tests, which stream from real senders into raopd inside network namespaces).
# Exits non-zero if any stage fails; ends with the `cargo test` result lines.
#
# Environment:
#   RAOPD_TEST_MIPS=1   also run the MIPS stage: scripts/setup-mips.sh, scripts/build-mips.sh,
#                       then the end-to-end tests against the MIPS binary under qemu-user
#   RAOPD_MIPS_TARGET   target of that stage (default mips-unknown-linux-musl)
#   RAOPD_MIPS_CMD      whole command that runs the MIPS binary (default: qemu-cmd.sh's prefix
#                       + the release binary)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: run as root (it installs packages; the end-to-end tests create network namespaces)" >&2
  exit 2
fi

start=$SECONDS
current=
stage() { current=$*; printf '\n==> [%4ds] %s\n' $((SECONDS - start)) "$*"; }
trap 'echo "scripts/test.sh: FAILED in stage: $current" >&2' ERR
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
results=()

# run_tests NAME CARGO-TEST-ARGS...: cargo test, output shown and kept for the summary
run_tests() {
  local name=$1; shift
  local rc=0
  cargo test --no-fail-fast "$@" 2>&1 | tee "$logs/$name.log" || rc=$?
  while IFS= read -r line; do results+=("$name: $line"); done \
    < <(grep -E '^test result:|^error: test failed|^error: [0-9]+ targets? failed' "$logs/$name.log" || true)
  return $rc
}

summary() {
  local passed=0 failed=0 ignored=0 line
  printf '\n==> summary (%ds)\n' $((SECONDS - start))
  for line in "${results[@]}"; do
    echo "$line"
    if [[ $line =~ ([0-9]+)\ passed\;\ ([0-9]+)\ failed\;\ ([0-9]+)\ ignored ]]; then
      passed=$((passed + BASH_REMATCH[1])); failed=$((failed + BASH_REMATCH[2]))
      ignored=$((ignored + BASH_REMATCH[3]))
    fi
  done
  echo "total: $passed passed, $failed failed, $ignored skipped"
}

stage "test dependencies"
bash scripts/setup-test-deps.sh

stage "cargo fmt --check"
cargo fmt --all -- --check

stage "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

stage "cargo test (unit, integration, end-to-end)"
rc=0
run_tests host || rc=$?

# ---- MIPS stage: off by default; RAOPD_TEST_MIPS=1 switches it on ---------------------------------
# scripts/setup-mips.sh installs the cross toolchain and qemu-user, scripts/build-mips.sh builds the
# release binary, scripts/qemu-cmd.sh prints the qemu-user prefix that runs it; the end-to-end tests
# then drive that binary through RAOPD_CMD.
if [ $rc = 0 ] && [ "${RAOPD_TEST_MIPS:-0}" = 1 ]; then
  for s in setup-mips.sh build-mips.sh qemu-cmd.sh; do
    [ -f "scripts/$s" ] || { echo "scripts/test.sh: RAOPD_TEST_MIPS=1 but scripts/$s is missing" >&2; exit 1; }
  done
  mips_target=${RAOPD_MIPS_TARGET:-mips-unknown-linux-musl}
  stage "MIPS: setup"
  bash scripts/setup-mips.sh
  stage "MIPS: build $mips_target"
  bash scripts/build-mips.sh "$mips_target"
  stage "MIPS: end-to-end tests under qemu ($mips_target)"
  if [ -z "${RAOPD_MIPS_CMD:-}" ]; then
    RAOPD_MIPS_CMD="$(bash scripts/qemu-cmd.sh "$mips_target") ${CARGO_TARGET_DIR:-target}/$mips_target/release/raopd"
  fi
  RAOPD_CMD=$RAOPD_MIPS_CMD run_tests mips --test e2e || rc=$?
fi
# ------------------------------------------------------------------------------------------------

summary
exit $rc
