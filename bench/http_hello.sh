#!/usr/bin/env bash
# GET hello world, side by side in one run: spike vs `wasmtime serve` (both
# serving the same plain wasi:http component, a fresh instance per request)
# vs workerd (the same hello as a Worker). Same machine, same load generator.
#
#   bench/http_hello.sh            # 2 rounds of 15 s per server
#   ROUNDS=1 DURATION=5s bench/http_hello.sh
#
# Prints requests/s, p50 and p99 per server and the ratios, then what
# `spike check` measures: per-request instantiation, compile vs cached load.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-15s}"
CONNECTIONS="${CONNECTIONS:-32}"
out=bench/out
mkdir -p "$out"
source bench/lib.sh

set_up_and_build
wasmtime="${SPIKE_TOOLS_DIR:-$HOME/.cache/spike-tools}/wasmtime-48/bin/wasmtime"
workerd=bench/node_modules/.bin/workerd
plain="$CARGO_TARGET_DIR/wasm32-wasip2/guest/fixture_plain_hello.wasm"

work=$(mktemp -d)
pids=()
trap cleanup EXIT

# spike: the plain component at /, and the SDK hello at /hello.
mkdir -p "$work/plugins"
cp "$plain" "$work/plugins/plain.wasm"
printf 'component = "plain.wasm"\n[[routes]]\nprefix = "/"\n' > "$work/plugins/plain.toml"
cp "$CARGO_TARGET_DIR/wasm32-wasip2/guest/hello.wasm" "$work/plugins/hello.wasm"
printf 'component = "hello.wasm"\n[[routes]]\nprefix = "/hello"\n[grants]\nkv = ["hello"]\n' > "$work/plugins/hello.toml"

wait_up() {
  for _ in $(seq 1 200); do
    curl -fs "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server at $1 did not come up" >&2
  exit 1
}

"$spike" serve --listen 127.0.0.1:8788 --plugins "$work/plugins" --data "$work/data" --no-watch >"$out/spike.log" 2>&1 &
pids+=($!)
"$wasmtime" serve -Scli --addr 127.0.0.1:8789 "$plain" >"$out/wasmtime.log" 2>&1 &
pids+=($!)
(cd bench/workerd && exec ../node_modules/.bin/workerd serve config.capnp) >"$out/workerd.log" 2>&1 &
pids+=($!)
wait_up http://127.0.0.1:8788/
wait_up http://127.0.0.1:8789/
wait_up http://127.0.0.1:8790/


run() { # name url round
  local file="$out/wrk-$1-$3.txt"
  wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$2" >"$file"
  local rps p50 p99 errors
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$file")
  p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$file")")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$file")")
  errors=$(awk '/Non-2xx|Socket errors/ {print}' "$file" | tr '\n' ' ')
  printf '%-22s round %s  %10s req/s  p50 %6.2f ms  p99 %6.2f ms  %s\n' "$1" "$3" "$rps" "$p50" "$p99" "$errors"
  echo "$1 $3 $rps $p50 $p99" >>"$out/results.txt"
}

: >"$out/results.txt"
echo "wrk -t2 -c$CONNECTIONS -d$DURATION, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
for round in $(seq 1 "$ROUNDS"); do
  run spike-plain http://127.0.0.1:8788/ "$round"
  run wasmtime-serve http://127.0.0.1:8789/ "$round"
  run workerd http://127.0.0.1:8790/ "$round"
  run spike-sdk-hello http://127.0.0.1:8788/hello "$round"
done

mean() { awk -v n="$1" -v col="$2" '$1 == n {s += $col; c++} END {printf "%.2f", s / c}' "$out/results.txt"; }
echo
echo "mean over $ROUNDS rounds:"
for n in spike-plain wasmtime-serve workerd spike-sdk-hello; do
  printf '  %-18s %10s req/s  p50 %6s ms  p99 %6s ms\n' "$n" "$(mean $n 3)" "$(mean $n 4)" "$(mean $n 5)"
done
awk -v s="$(mean spike-plain 3)" -v w="$(mean wasmtime-serve 3)" -v k="$(mean workerd 3)" \
    -v sp="$(mean spike-plain 5)" -v wp="$(mean wasmtime-serve 5)" 'BEGIN {
  printf "ratio spike / wasmtime serve: %.2fx requests/s, p99 %.2f ms vs %.2f ms\n", s / w, sp, wp
  printf "ratio spike / workerd:        %.2fx requests/s\n", s / k
}'

echo
echo "spike check (instantiation per request, compile vs cached load):"
for c in "$plain" "$CARGO_TARGET_DIR/wasm32-wasip2/guest/hello.wasm"; do
  "$spike" check "$c" 2>/dev/null | tee "$out/check-$(basename "$c" .wasm).json" |
    awk -F': ' '/"(component|instantiate_us_median|instantiate_us_p99|compile_ms|cached_load_ms|cache_speedup)"/ {gsub(/[",]/, ""); printf "  %s %s\n", $1, $2}'
done
