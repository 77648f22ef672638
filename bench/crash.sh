#!/usr/bin/env bash
# The long form of the crash proof (tests/e2e/crash.rs): kill -9 of spike
# while KV, blob, CMS, chat, Yjs and LiveStore writes run at once, ROUNDS
# times over (the test suite does 3); after every restart each
# acknowledged write is checked. Prints what each round had acknowledged
# before its kill.
#
#   bench/crash.sh              # 25 kills
#   ROUNDS=100 bench/crash.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"
scripts/setup.sh
scripts/build-guests.sh >/dev/null
cargo build --quiet -p spike
SPIKE_CRASH_ROUNDS="${ROUNDS:-25}" cargo test --quiet -p spike-e2e --test crash -- --nocapture 2>&1 |
  grep -E '^round|^after|test result|panicked|assert'
