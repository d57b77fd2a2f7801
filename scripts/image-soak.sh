#!/usr/bin/env bash
# The firmware image's 3-minute stream (issue 13): boots the image of scripts/build-image.sh
# under qemu-system-mipsel, streams SECS seconds of noise (default 180) from pyatv into it, and
# checks raopd's own statistics against the kernel sound card's clock: |sync error| within
# 2 ms for the whole stream, no underrun, no resync. Prints boot-to-ready time and raopd's CPU
# share in the guest. Too long for scripts/test.sh, whose image test streams 30 s.
#
#   sudo scripts/image-soak.sh [SECS]
# Needs scripts/setup-test-deps.sh, scripts/setup-mips.sh and a mipsel-musl build
# (scripts/build-mips.sh mipsel-unknown-linux-musl; scripts/build-image.sh builds it if missing).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export RAOPD_IMAGE_SOAK_SECS=${1:-180}
exec cargo test --test image image_soak -- --ignored --nocapture
