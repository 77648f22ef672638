#!/usr/bin/env bash
# The hostile probes (bench/hostile.py) against the release build: builds the
# guests and the release host, then runs the probes named (all by default).
#
#   bench/hostile.sh                 # every probe, about 3 minutes
#   bench/hostile.sh slowloris       # one
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"
scripts/setup.sh
scripts/build-guests.sh >/dev/null
cargo build --quiet --release -p spike
exec python3 bench/hostile.py "$@"
