#!/usr/bin/env bash
# Yjs, side by side in one run: spike's yjs rooms vs the reference Node
# server, npm `@y/websocket-server` 0.1.1 with yjs 13.6 (in memory; spike
# stores every update durably before sending it). One load generator for
# both (bench/roomload: a yrs writer and plain WebSocket readers):
#
#   fan-out     one writer, 50 readers, 100 updates/s: latency of every delivery
#   saturation  one writer keeping 16 updates in flight, 50 readers: updates/s
#   documents   2,000 documents, one client each having written 1 KB in 10
#               updates, on fresh servers: RSS growth per document
#
#   bench/yjs.sh                    # 2 rounds of 10 s
#   ROUNDS=1 SECONDS_EACH=5 bench/yjs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"
ROUNDS="${ROUNDS:-2}"
SECONDS_EACH="${SECONDS_EACH:-10}"
DOCS="${DOCS:-2000}"
out=bench/out
mkdir -p "$out"
source bench/lib.sh

bench/setup.sh
scripts/setup.sh
cargo build --quiet --release -p spike -p roomload
spike="$CARGO_TARGET_DIR/release/spike"
load="$CARGO_TARGET_DIR/release/roomload"
ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d)
pids=()
trap cleanup EXIT

mkdir -p "$work/plugins"
cat > "$work/plugins/yjs.toml" <<'TOML'
[[rooms]]
prefix = "/yjs"
protocol = "yjs"
max_connections = 20000
messages_per_s = 1000000
send_queue = 4096
TOML

start_spike() {
  rm -rf "$work/data"
  "$spike" serve --listen 127.0.0.1:8795 --plugins "$work/plugins" --data "$work/data" --no-watch \
    --max-connections 2000 --max-room-connections 12000 >"$out/yjs-spike.log" 2>&1 &
  spike_pid=$!
  pids+=("$spike_pid")
  wait_port 8795
}
start_node() {
  (cd bench && HOST=127.0.0.1 PORT=8796 exec node node_modules/@y/websocket-server/src/server.js) \
    >"$out/yjs-node.log" 2>&1 &
  node_pid=$!
  pids+=("$node_pid")
  wait_port 8796
}

start_spike
start_node
declare -A p50 p99 rate
for round in $(seq 1 "$ROUNDS"); do
  for target in spike node; do
    url=ws://127.0.0.1:8795/yjs; [ "$target" = node ] && url=ws://127.0.0.1:8796
    r=$("$load" yjs-fanout "$url" 50 100 "$SECONDS_EACH")
    echo "round $round $target $r"
    p50[$target]+="$(field "$r" p50_ms) "
    p99[$target]+="$(field "$r" p99_ms) "
    r=$("$load" yjs-saturate "$url" 50 16 "$SECONDS_EACH")
    echo "round $round $target $r"
    rate[$target]+="$(field "$r" updates_per_s) "
  done
done
stop "$spike_pid"; stop "$node_pid"

declare -A per_doc
for target in spike node; do
  if [ "$target" = spike ]; then start_spike; pid=$spike_pid; url=ws://127.0.0.1:8795/yjs
  else start_node; pid=$node_pid; url=ws://127.0.0.1:8796; fi
  sleep 1
  rss_around "$pid" docs 2 "$work/docs.out" "$load" yjs-docs "$url" "$DOCS" 8
  echo "documents $target $(cat "$work/docs.out") rss ${rss_before} -> ${rss_after} KiB"
  per_doc[$target]=$(( (rss_after - rss_before) * 1024 / DOCS ))
  wait "$loader"
  stop "$pid"
done

echo
printf '%-8s %10s %10s %12s %12s\n' server "p50 ms" "p99 ms" "updates/s" "B/document"
for target in spike node; do
  printf '%-8s %10s %10s %12s %12s\n' "$target" "$(median "${p50[$target]}")" \
    "$(median "${p99[$target]}")" "$(median "${rate[$target]}")" "${per_doc[$target]}"
done
awk -v s="$(median "${rate[spike]}")" -v n="$(median "${rate[node]}")" -v sm="${per_doc[spike]}" -v nm="${per_doc[node]}" \
  'BEGIN {printf "spike / node: %.1fx updates/s, %.2fx memory per document\n", s / n, sm / nm}'
