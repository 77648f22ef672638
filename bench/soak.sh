#!/usr/bin/env bash
# The soak's long form (tests/soak/): every service of the release build
# at once, SECONDS (600) long: 16 HTTP clients in a closed loop on hello
# (greeting and KV counter), CMS writes and reads, transpiles, Chromium
# renders, AI calls to the fake provider, MEMBERS (500) room members each
# sending a message a second. Prints the report: calls, errors, RSS and
# open files after the warm-up and at the end with their slopes, and
# HTTP p99 per 10 s.
#
#   bench/soak.sh
#   SECONDS_TOTAL=120 MEMBERS=200 bench/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"
source bench/lib.sh
set_up_and_build
cargo build --quiet --release -p spike-e2e --bin soak
ulimit -n "$(ulimit -Hn)"
"$CARGO_TARGET_DIR/release/soak" "$spike" "${SECONDS_TOTAL:-600}" "${MEMBERS:-500}"
