#!/usr/bin/env bash
# The firmware image test (issue 13): builds the mipsel-musl binary if missing, the image
# (scripts/build-image.sh), boots it under qemu-system-mipsel and runs tests/image.rs's main
# test: bit-exact capture from the kernel loopback (pyatv, PulseAudio), mDNS seen from the host
# side, poll descriptors, a 3-minute stream's sync statistics, withdrawal on SIGTERM and
# power-off. scripts/test.sh runs the same test in its MIPS stage; this runs it alone. A longer
# stream: scripts/image-soak.sh [SECS].
#
#   sudo scripts/image-test.sh
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
bash scripts/setup-test-deps.sh
bash scripts/setup-mips.sh
t=mipsel-unknown-linux-musl
[ -x "${CARGO_TARGET_DIR:-target}/$t/release/raopd" ] || bash scripts/build-mips.sh "$t"
exec cargo test --test image firmware_image_boots_plays_and_announces -- --ignored --nocapture
