#!/usr/bin/env bash
# Rooms, side by side in one run: spike (a relay room, and the same room
# through a room handler component) vs a Durable Object chat room in
# workerd (the WebSocket Hibernation API, bench/workerd/rooms.js). One load
# generator for all (bench/roomload, one thread):
#
#   fan-out     100 clients in one room, 100 messages/s in all: latency of
#               every delivery, p50 / p99
#   saturation  100 clients in one room, each with 8 messages in flight:
#               deliveries/s; server CPU per event (spike: relay vs handler)
#   idle        10,000 connections (100 rooms x 100), fresh servers: RSS
#               growth per connection (workerd: 5,000; it holds more than
#               one descriptor per socket and fails at accept() near the
#               20,000 descriptors a process may have here)
#
#   bench/rooms.sh                  # 2 rounds of 10 s
#   ROUNDS=1 SECONDS_EACH=5 bench/rooms.sh
#
# spike stores every event durably (redb, group commit) before sending it;
# the workerd room stores nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"
ROUNDS="${ROUNDS:-2}"
SECONDS_EACH="${SECONDS_EACH:-10}"
IDLE="${IDLE:-10000}"
IDLE_WORKERD="${IDLE_WORKERD:-5000}"
out=bench/out
mkdir -p "$out"
source bench/lib.sh

set_up_and_build -p roomload
load="$CARGO_TARGET_DIR/release/roomload"
guest="$CARGO_TARGET_DIR/wasm32-wasip2/guest"
ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d)
pids=()
trap cleanup EXIT

# spike: relay rooms at /room; the same through a handler (the fault
# fixture's echo path: one fresh instance per event, no storage) at /hroom.
mkdir -p "$work/plugins"
limits='max_connections = 20000
messages_per_s = 1000000
send_queue = 4096'
printf '[[rooms]]\nprefix = "/room"\n%s\n' "$limits" > "$work/plugins/relay.toml"
cp "$guest/fixture_room_faults_v1.wasm" "$work/plugins/echo.wasm"
printf 'component = "echo.wasm"\n[[rooms]]\nprefix = "/hroom"\n%s\n' "$limits" > "$work/plugins/echo.toml"


start_spike() {
  rm -rf "$work/data"
  # The open files go to room sockets: 10,000 of them, and few HTTP ones.
  "$spike" serve --listen 127.0.0.1:8792 --metrics-listen 127.0.0.1:8793 \
    --max-connections 2000 --max-room-connections 12000 \
    --plugins "$work/plugins" --data "$work/data" --no-watch >"$out/rooms-spike.log" 2>&1 &
  spike_pid=$!
  pids+=("$spike_pid")
  wait_port 8792
}

start_workerd() {
  (cd bench/workerd && exec ../node_modules/.bin/workerd serve rooms.capnp) >"$out/rooms-workerd.log" 2>&1 &
  workerd_pid=$!
  pids+=("$workerd_pid")
  wait_port 8791
}


cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
events() { curl -fs 127.0.0.1:8793/metrics | awk -v p="$1" '$1 ~ "spike_room_events_total\\{plugin=\""p"\"" {print $2}'; }

start_spike
start_workerd
declare -A p50 p99 rate cpu
for round in $(seq 1 "$ROUNDS"); do
  for target in spike spike-handler workerd; do
    case $target in
      spike) url=ws://127.0.0.1:8792/room ;;
      spike-handler) url=ws://127.0.0.1:8792/hroom ;;
      workerd) url=ws://127.0.0.1:8791/room ;;
    esac
    r=$("$load" fanout "$url/fanout-$round" 100 100 "$SECONDS_EACH")
    echo "round $round $target $r"
    p50[$target]+="$(field "$r" p50_ms) "
    p99[$target]+="$(field "$r" p99_ms) "
    plugin=relay; [ "$target" = spike-handler ] && plugin=echo
    if [ "$target" != workerd ]; then
      e0=$(events "$plugin"); t0=$(cpu_ticks "$spike_pid")
    fi
    r=$("$load" saturate "$url/saturate-$round" 100 8 "$SECONDS_EACH")
    echo "round $round $target $r"
    rate[$target]+="$(field "$r" deliveries_per_s) "
    if [ "$target" != workerd ]; then
      e1=$(events "$plugin"); t1=$(cpu_ticks "$spike_pid")
      hz=$(getconf CLK_TCK)
      cpu[$target]+="$(awk -v t=$((t1 - t0)) -v e=$((e1 - e0)) -v hz="$hz" 'BEGIN {printf "%.1f", t / hz / e * 1e6}') "
    fi
  done
done

# Idle connections, on fresh servers.
stop "$spike_pid"; stop "$workerd_pid"
declare -A per_conn
for target in spike workerd; do
  if [ "$target" = spike ]; then start_spike; pid=$spike_pid; url=ws://127.0.0.1:8792/room; n=$IDLE
  else start_workerd; pid=$workerd_pid; url=ws://127.0.0.1:8791/room; n=$IDLE_WORKERD; fi
  sleep 1
  rss_around "$pid" open_after 3 "$work/idle.out" "$load" idle "$url" 100 $((n / 100)) 10
  echo "idle $target $(cat "$work/idle.out") rss ${rss_before} -> ${rss_after} KiB"
  per_conn[$target]=$(( (rss_after - rss_before) * 1024 / n ))
  wait "$loader"
  stop "$pid"
done

echo
printf '%-14s %10s %10s %16s %14s %14s\n' server "p50 ms" "p99 ms" "deliveries/s" "CPU us/event" "idle B/conn"
for target in spike spike-handler workerd; do
  c=-; [ -n "${cpu[$target]:-}" ] && c=$(median "${cpu[$target]}")
  i=${per_conn[$target]:--}
  printf '%-14s %10s %10s %16s %14s %14s\n' "$target" "$(median "${p50[$target]}")" \
    "$(median "${p99[$target]}")" "$(median "${rate[$target]}")" "$c" "$i"
done
awk -v s="$(median "${rate[spike]}")" -v w="$(median "${rate[workerd]}")" \
  'BEGIN {printf "saturation: spike %.1fx workerd\n", s / w}'
awk -v r="$(median "${cpu[spike]}")" -v h="$(median "${cpu[spike-handler]}")" \
  'BEGIN {printf "a handler component costs %.1f us of server CPU per event\n", h - r}'
