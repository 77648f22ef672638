#!/usr/bin/env bash
# The cluster backend, side by side in one run, on this machine:
#  1. one node on redb vs one node on NATS (JetStream with sync_interval
#     always, as scripts/cluster.sh runs it), the same hello plugin:
#     KV reads (GET /hello/counter), KV counter increments (POST), and
#     GET /hello (no storage);
#  2. 1, 2 and 3 nodes on NATS, wrk spreading the same connections over
#     (2 wrk threads in all for one node and two, 3 for three)
#     them: total requests/s and per-node efficiency (this machine has 2
#     cores: more nodes share the same CPUs, so the question is what the
#     cluster costs, not how it scales);
#  3. room fan-out with 1, 2 and 3 nodes: one relay room, its 99 clients
#     spread over the nodes (the first node owns the room, the others
#     forward their clients to it), bench/roomload: delivery latency at
#     100 messages/s in all, and deliveries/s with 8 messages in flight
#     per client;
#  4. failover: a room's owner killed (SIGKILL) with a client on it, the
#     time until the client's next event is stored through another node
#     (bench/failover.mjs), FAILOVERS times.
#
#   bench/cluster.sh                     # 2 rounds of 10 s, 5 failovers
#   ROUNDS=1 DURATION=5s bench/cluster.sh
#   ONLY=failover FAILOVERS=10 bench/cluster.sh   # or stores, scale, rooms
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-32}"
out=bench/out/cluster
mkdir -p "$out"
source bench/lib.sh

set_up_and_build -p roomload
load="$CARGO_TARGET_DIR/release/roomload"
nats_server="${SPIKE_NATS_SERVER:-${SPIKE_TOOLS_DIR:-$HOME/.cache/spike-tools}/venv/bin/nats-server}"

work=$(mktemp -d)
pids=()
trap cleanup EXIT

mkdir -p "$work/plugins"
cp "$CARGO_TARGET_DIR/wasm32-wasip2/guest/hello.wasm" "$work/plugins/hello.wasm"
printf 'component = "hello.wasm"\n[[routes]]\nprefix = "/hello"\n[grants]\nkv = ["hello"]\n[env]\nWRITE_ACCESS = "anyone"\n' >"$work/plugins/hello.toml"
# Room limits as bench/rooms.sh sets them: saturation is not cut by the
# per-client message rate.
printf '[[rooms]]\nprefix = "/chat"\nmax_connections = 20000\nmessages_per_s = 1000000\nsend_queue = 4096\n' \
  >"$work/plugins/rooms.toml"
printf 'wrk.method = "POST"\n' >"$work/post.lua"

cat >"$work/nats.conf" <<EOF
listen: 127.0.0.1:8830
jetstream { store_dir: "$work/jetstream", sync_interval: always }
EOF
"$nats_server" -c "$work/nats.conf" >"$out/nats.log" 2>&1 &
nats_pid=$!
pids+=("$nats_pid")
wait_port 8830

serve() { # port data [flags...]; sets $last_pid
  local port=$1 data=$2
  shift 2
  "$spike" serve --listen "127.0.0.1:$port" --plugins "$work/plugins" --data "$data" --no-watch "$@" \
    >"$out/spike-$port.log" 2>&1 &
  last_pid=$!
  pids+=("$last_pid")
  for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "spike on $port did not become ready" >&2
  exit 1
}

rps() { awk '/^Requests\/sec:/ {print $2}' "$1"; }
errors() { awk '/Non-2xx|Socket errors/ {print}' "$1" | tr '\n' ' '; }
: >"$out/results.txt"

# wrk on one node: name url round [lua]
one() {
  local file="$out/wrk-$1-$3.txt"
  wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency ${4:+-s "$4"} "$2" >"$file"
  local p99
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$file")")
  printf '%-24s round %s %10s req/s  p99 %6.2f ms  %s\n' "$1" "$3" "$(rps "$file")" "$p99" "$(errors "$file")"
  echo "$1 $3 $(rps "$file")" >>"$out/results.txt"
}

# Whether phase $1 runs (all of them unless ONLY names one).
want() { [ -z "${ONLY:-}" ] || [ "$ONLY" = "$1" ]; }

echo "wrk -c$CONNECTIONS -d$DURATION, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
if want stores; then
echo
echo "== one node: redb vs NATS (same plugin, same requests)"
serve 8831 "$work/redb"
redb_pid=$last_pid
serve 8832 "$work/nats-1" --storage nats://127.0.0.1:8830/single --node single
nats_node_pid=$last_pid
curl -fs -X POST http://127.0.0.1:8831/hello/counter >/dev/null
curl -fs -X POST http://127.0.0.1:8832/hello/counter >/dev/null
for round in $(seq 1 "$ROUNDS"); do
  one redb-kv-read http://127.0.0.1:8831/hello/counter "$round"
  one nats-kv-read http://127.0.0.1:8832/hello/counter "$round"
  one redb-kv-increment http://127.0.0.1:8831/hello/counter "$round" "$work/post.lua"
  one nats-kv-increment http://127.0.0.1:8832/hello/counter "$round" "$work/post.lua"
  one redb-hello http://127.0.0.1:8831/hello "$round"
  one nats-hello http://127.0.0.1:8832/hello "$round"
done
stop "$redb_pid"
stop "$nats_node_pid"
fi

mean() { awk -v n="$1" '$1 == n {s += $3; c++} END {printf "%.0f", s / c}' "$out/results.txt"; }
if want stores; then
echo
for what in kv-read kv-increment hello; do
  awk -v w="$what" -v r="$(mean "redb-$what")" -v n="$(mean "nats-$what")" \
    'BEGIN {printf "  %-13s redb %8d req/s   NATS %8d req/s   NATS / redb %.2fx\n", w, r, n, n / r}'
done
fi

if want scale; then
echo
echo "== 1, 2, 3 nodes on NATS (the connections spread over the nodes)"
for nodes in 1 2 3; do
  node_pids=()
  for i in $(seq 1 "$nodes"); do
    serve $((8840 + i)) "$work/n$nodes-$i" --storage "nats://127.0.0.1:8830/scale$nodes" --node "node-$i"
    node_pids+=("$last_pid")
  done
  curl -fs -X POST http://127.0.0.1:8841/hello/counter >/dev/null
  for what in hello kv-increment; do
    url_path=/hello
    lua=""
    if [ "$what" = kv-increment ]; then url_path=/hello/counter; lua="$work/post.lua"; fi
    wrk_pids=()
    for i in $(seq 1 "$nodes"); do
      wrk -t$((nodes == 1 ? 2 : 1)) -c$((CONNECTIONS / nodes)) -d"$DURATION" ${lua:+-s "$lua"} \
        "http://127.0.0.1:$((8840 + i))$url_path" >"$out/wrk-scale-$nodes-$what-$i.txt" &
      wrk_pids+=($!)
    done
    wait "${wrk_pids[@]}"
    total=0
    errs=""
    for i in $(seq 1 "$nodes"); do
      total=$(awk -v a="$total" -v b="$(rps "$out/wrk-scale-$nodes-$what-$i.txt")" 'BEGIN {print a + b}')
      errs+=$(errors "$out/wrk-scale-$nodes-$what-$i.txt")
    done
    echo "scale-$what $nodes $total" >>"$out/results.txt"
    printf '  %d node(s) %-13s %10.0f req/s in all  %s\n' "$nodes" "$what" "$total" "$errs"
  done
  for pid in "${node_pids[@]}"; do stop "$pid"; done
done
echo
for what in hello kv-increment; do
  one_node=$(awk -v w="scale-$what" '$1 == w && $2 == 1 {print $3}' "$out/results.txt")
  for nodes in 2 3; do
    awk -v w="$what" -v n="$nodes" -v one="$one_node" \
      -v t="$(awk -v w="scale-$what" -v n="$nodes" '$1 == w && $2 == n {print $3}' "$out/results.txt")" \
      'BEGIN {printf "  %-13s %d nodes: %.2fx one node'"'"'s requests/s (per-node efficiency %.2f)\n", w, n, t / one, t / one / n}'
  done
done
fi

if want rooms; then
echo
echo "== room fan-out, 1, 2, 3 nodes on NATS (99 clients of one room spread over the nodes)"
seconds=${DURATION%s}
for nodes in 1 2 3; do
  node_pids=()
  urls=()
  for i in $(seq 1 "$nodes"); do
    serve $((8860 + i)) "$work/r$nodes-$i" --storage "nats://127.0.0.1:8830/rooms$nodes" --node "node-$i"
    node_pids+=("$last_pid")
  done
  for round in $(seq 1 "$ROUNDS"); do
    urls=()
    for i in $(seq 1 "$nodes"); do urls+=("ws://127.0.0.1:$((8860 + i))/chat/fanout-$round"); done
    r=$("$load" fanout "$(IFS=,; echo "${urls[*]}")" 99 100 "$seconds")
    urls=()
    for i in $(seq 1 "$nodes"); do urls+=("ws://127.0.0.1:$((8860 + i))/chat/saturate-$round"); done
    s=$("$load" saturate "$(IFS=,; echo "${urls[*]}")" 99 8 "$seconds")
    printf '  %d node(s) round %s: p50 %s ms  p99 %s ms  saturated %s deliveries/s\n' "$nodes" "$round" \
      "$(field "$r" p50_ms)" "$(field "$r" p99_ms)" "$(field "$s" deliveries_per_s)"
    echo "rooms $nodes $(field "$s" deliveries_per_s) $(field "$r" p50_ms) $(field "$r" p99_ms)" >>"$out/results.txt"
  done
  for pid in "${node_pids[@]}"; do stop "$pid"; done
done
echo
one_node=$(awk '$1 == "rooms" && $2 == 1 {s += $3; c++} END {print s / c}' "$out/results.txt")
for nodes in 2 3; do
  awk -v n="$nodes" -v one="$one_node" '$1 == "rooms" && $2 == n {s += $3; c++}
    END {printf "  rooms %d nodes: %.2fx one node'"'"'s deliveries/s (per-node efficiency %.2f)\n", n, s / c / one, s / c / one / n}' \
    "$out/results.txt"
done
fi

if want failover; then
echo
echo "== failover: the room's owner killed, the next event stored through another node"
failovers=()
for trial in $(seq 1 "${FAILOVERS:-5}"); do
  serve 8851 "$work/f$trial-1" --storage "nats://127.0.0.1:8830/failover$trial" --node node-1
  first_pid=$last_pid
  serve 8852 "$work/f$trial-2" --storage "nats://127.0.0.1:8830/failover$trial" --node node-2
  second_pid=$last_pid
  line=$(node bench/failover.mjs ws://127.0.0.1:8851/chat/f ws://127.0.0.1:8852/chat/f "$first_pid")
  wait "$first_pid" 2>/dev/null || true
  stop "$second_pid"
  echo "  trial $trial: $line"
  failovers+=("$(field "$line" failover_ms)")
done
echo "  failover median $(median "${failovers[*]}") ms (target 3000 ms)"
fi
