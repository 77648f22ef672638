#!/usr/bin/env bash
# Rooms and Yjs rooms of this tree against an earlier revision, side by
# side in one run (as bench/compare_builds.sh does for hello): both release
# builds serve a relay room and a yjs room; rounds alternate base and head;
# the verdict is the median of each pair's ratio.
#
#   bench/compare_rooms.sh 832dce8^          # 6 pairs of rounds of 5 s
#   ROUNDS=4 SECONDS_EACH=4 bench/compare_rooms.sh HEAD~1
#   SPIKE_BASE=/tmp/a SPIKE_HEAD=/tmp/b bench/compare_rooms.sh label
#                                             # two binaries built before
#
# Each round, on a fresh server: relay saturation (100 clients in one room,
# 8 messages each in flight: deliveries/s, and the server's CPU per stored
# event), then yjs saturation (one writer keeping 16 updates in flight, 50
# readers: updates/s), then relay fan-out (100 clients, 100 messages/s: p99
# of every delivery).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"
rev="${1:?usage: bench/compare_rooms.sh <git revision>}"
ROUNDS="${ROUNDS:-6}"
SECONDS_EACH="${SECONDS_EACH:-5}"
out=bench/out
mkdir -p "$out"
source bench/lib.sh

scripts/setup.sh
work=$(mktemp -d)
pids=()
trap 'cleanup; git worktree remove --force "$work/tree" 2>/dev/null || true' EXIT
# As in compare_builds.sh: both builds write the same `libspike`, so this
# tree's sources are touched around the other revision's build.
cargo build --quiet --release -p roomload
load="$CARGO_TARGET_DIR/release/roomload"
if [ -n "${SPIKE_BASE:-}" ] && [ -n "${SPIKE_HEAD:-}" ]; then
  cp "$SPIKE_BASE" "$work/spike-base"
  cp "$SPIKE_HEAD" "$work/spike-head"
else
  find host/src -name '*.rs' -exec touch {} +
  cargo build --quiet --release -p spike
  cp "$CARGO_TARGET_DIR/release/spike" "$work/spike-head"
  git worktree add --quiet --detach "$work/tree" "$rev"
  (cd "$work/tree" && cargo build --quiet --release -p spike)
  cp "$CARGO_TARGET_DIR/release/spike" "$work/spike-base"
  find host/src -name '*.rs' -exec touch {} +
fi
ulimit -n "$(ulimit -Hn)"

mkdir -p "$work/plugins"
cat >"$work/plugins/relay.toml" <<'TOML'
[[rooms]]
prefix = "/room"
max_connections = 20000
messages_per_s = 1000000
send_queue = 4096
TOML
cat >"$work/plugins/yjs.toml" <<'TOML'
[[rooms]]
prefix = "/yjs"
protocol = "yjs"
max_connections = 20000
messages_per_s = 1000000
send_queue = 4096
TOML

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
events() { curl -fs 127.0.0.1:8798/metrics | awk '$1 ~ "spike_room_events_total\\{plugin=\"relay\"" {print $2}'; }
run() { # name binary round
  rm -rf "$work/data"
  "$2" serve --listen 127.0.0.1:8797 --metrics-listen 127.0.0.1:8798 --plugins "$work/plugins" \
    --data "$work/data" --no-watch --max-connections 2000 --max-room-connections 12000 \
    >"$out/compare-rooms-$1.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  wait_port 8797
  wait_port 8798
  local e0 t0 sat yjs fan e1 t1
  e0=$(events); t0=$(cpu_ticks "$pid")
  sat=$("$load" saturate "ws://127.0.0.1:8797/room/s-$3" 100 8 "$SECONDS_EACH")
  e1=$(events); t1=$(cpu_ticks "$pid")
  yjs=$("$load" yjs-saturate "ws://127.0.0.1:8797/yjs" 50 16 "$SECONDS_EACH")
  fan=$("$load" fanout "ws://127.0.0.1:8797/room/f-$3" 100 100 "$SECONDS_EACH")
  stop "$pid"
  local cpu
  cpu=$(awk -v t=$((t1 - t0)) -v e=$((e1 - e0)) -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t / hz / e * 1e6}')
  printf '%-4s round %s  relay %8s deliveries/s  %6s us CPU/event  yjs %7s updates/s  fan-out p99 %s ms\n' \
    "$1" "$3" "$(field "$sat" deliveries_per_s)" "$cpu" "$(field "$yjs" updates_per_s)" "$(field "$fan" p99_ms)"
  echo "$1 $(field "$sat" deliveries_per_s) $cpu $(field "$yjs" updates_per_s) $(field "$fan" p99_ms)" >>"$out/compare-rooms.txt"
}

: >"$out/compare-rooms.txt"
echo "rooms: base $rev ($(git rev-parse --short "$rev" 2>/dev/null || echo a binary)) vs head ($(git rev-parse --short HEAD), with the working tree), $(nproc) cores"
for round in $(seq 1 "$ROUNDS"); do
  run base "$work/spike-base" "$round"
  run head "$work/spike-head" "$round"
done
paste - - <"$out/compare-rooms.txt" | awk '{print $7 / $2, $8 / $3, $9 / $4, $10 / $5}' >"$out/compare-rooms-pairs.txt"
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
col() { cut -d' ' -f"$1" "$out/compare-rooms-pairs.txt" | median; }
printf 'head / base, median of %s pairs: relay %.3fx deliveries/s, %.3fx CPU per event; yjs %.3fx updates/s; fan-out p99 %.3fx\n' \
  "$ROUNDS" "$(col 1)" "$(col 2)" "$(col 3)" "$(col 4)"
