#!/usr/bin/env bash
# A restart under load (bench/restart.mjs): 16 HTTP clients on /hello and
# 200 members of 20 chat rooms while the release build is stopped with
# SIGTERM and started again on the same data. Prints the JSON result of
# each round: how long clients were refused, what members were told, that
# every member came back and missed no event.
#
#   bench/restart.sh                    # 3 rounds
#   ROUNDS=1 MEMBERS=500 bench/restart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"
ROUNDS="${ROUNDS:-3}"
MEMBERS="${MEMBERS:-200}"
source bench/lib.sh

set_up_and_build
guest="$CARGO_TARGET_DIR/wasm32-wasip2/guest"
work=$(mktemp -d)
pids=()
trap cleanup EXIT
mkdir -p "$work/plugins"
cp "$guest/hello.wasm" "$work/plugins/"
cp plugins/hello.toml "$work/plugins/"
printf '[[rooms]]\nprefix = "/chat"\nmax_connections = 20000\n' >"$work/plugins/rooms.toml"
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round $(node bench/restart.mjs "$spike" "$work/plugins" "$work/data" 8794 "$MEMBERS")"
done
