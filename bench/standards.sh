#!/usr/bin/env bash
# The WASI standards against spike's own interfaces, side by side in one
# run: one server, one plugin (tests/fixtures/store-bench), one namespace,
# the same small value, wrk on loopback:
#
#   spike-kv-read      GET  /store/kv/7        spike:host/kv `get`
#   wasi-kv-read       GET  /store/wasi-kv/7   wasi:keyvalue@0.2.0-draft2 `get`
#   spike-kv-increment POST /store/kv/count    spike:host/kv `increment`
#   wasi-kv-increment  POST /store/wasi-kv/count  wasi:keyvalue `atomics.increment`
#
# For each: requests/s, p50, p99 and the server's CPU time per request (its
# user + system ticks from /proc over the run), the cases of a round run
# one after another and the rounds repeated; then the issue's target: the
# standard's CPU per request within 5% of spike's own.
#
#   bench/standards.sh                     # 3 rounds of 8 s each
#   ROUNDS=1 DURATION=4s bench/standards.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-8s}"
CONNECTIONS="${CONNECTIONS:-32}"
out=bench/out/standards
mkdir -p "$out"
source bench/lib.sh

# Only wrk and this tree's builds are needed (not every peer of
# bench/setup.sh).
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
scripts/setup.sh serve
cargo build --quiet --profile guest --target wasm32-wasip2 -p fixture-store-bench
cargo build --quiet --release -p spike
spike="${SPIKE:-$CARGO_TARGET_DIR/release/spike}"
store="$CARGO_TARGET_DIR/wasm32-wasip2/guest/fixture_store_bench.wasm"

work=$(mktemp -d)
pids=()
trap cleanup EXIT
mkdir -p "$work/plugins"
cp "$store" "$work/plugins/store.wasm"
printf 'component = "store.wasm"\n[[routes]]\nprefix = "/store"\nmethods = ["GET", "POST"]\n[grants]\nsql = ["store"]\nkv = ["store"]\n' \
  >"$work/plugins/store.toml"
printf 'wrk.method = "POST"\n' >"$work/post.lua"

"$spike" serve --listen 127.0.0.1:8820 --plugins "$work/plugins" --data "$work/data" --no-watch \
  >"$out/spike.log" 2>&1 &
spike_pid=$!
pids+=("$spike_pid")
for _ in $(seq 1 600); do
  curl -fs -o /dev/null http://127.0.0.1:8820/readyz && break
  sleep 0.1
done
curl -fs -X POST http://127.0.0.1:8820/store/seed >/dev/null
# Both routes answer the same bytes.
[ "$(curl -fs http://127.0.0.1:8820/store/kv/7)" = "$(curl -fs http://127.0.0.1:8820/store/wasi-kv/7)" ] \
  || { echo "the two reads differ" >&2; exit 1; }

declare -A path lua
path[spike-kv-read]=/store/kv/7
path[wasi-kv-read]=/store/wasi-kv/7
path[spike-kv-increment]=/store/kv/count
path[wasi-kv-increment]=/store/wasi-kv/count
lua[spike-kv-increment]=$work/post.lua
lua[wasi-kv-increment]=$work/post.lua
names="spike-kv-read wasi-kv-read spike-kv-increment wasi-kv-increment"

declare -A cpus rates
for round in $(seq 1 "$ROUNDS"); do
  for name in $names; do
    url="http://127.0.0.1:8820${path[$name]}"
    read -r rate p50 p99 cpu rest < <(wrk_cpu "$spike_pid" "$url" "$out/$name-$round.txt" \
      ${lua[$name]:+-s "${lua[$name]}"})
    [ -z "${rest:-}" ] || { echo "$name: $rest" >&2; exit 1; }
    printf 'round %s %-20s %10.0f req/s  p50 %6.2f ms  p99 %6.2f ms  %7.2f µs CPU/req\n' \
      "$round" "$name" "$rate" "$p50" "$p99" "$cpu"
    cpus[$name]="${cpus[$name]:-} $cpu"
    rates[$name]="${rates[$name]:-} $rate"
  done
done

echo
echo "medians of $ROUNDS rounds ($DURATION each, $CONNECTIONS connections):"
for name in $names; do
  printf '  %-20s %10.0f req/s  %7.2f µs CPU/req\n' "$name" "$(median "${rates[$name]}")" "$(median "${cpus[$name]}")"
done
for op in read increment; do
  spike_cpu=$(median "${cpus[spike-kv-$op]}")
  wasi_cpu=$(median "${cpus[wasi-kv-$op]}")
  awk -v s="$spike_cpu" -v w="$wasi_cpu" -v op="$op" 'BEGIN {
    r = w / s
    printf "%s: wasi:keyvalue CPU/req is %.3fx spike:host/kv'"'"'s (target within 5%%: %s)\n", op, r, (r <= 1.05 ? "met" : "NOT met") }'
done
