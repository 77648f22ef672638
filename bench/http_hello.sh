#!/usr/bin/env bash
# Hello world, side by side in one run, one load generator (wrk on loopback),
# the same response everywhere ("Hello, world!\n", text/plain):
#
#   native            plain axum on tokio, no wasm: what the machine can do
#   spike, wasmtime   the plain wasi:http component (Rust), a fresh instance
#                     per request, and with instance reuse
#   workerd           the hello as a JavaScript Worker
#   *-js, *-py        the same hello as a componentize-js and a
#                     componentize-py component (bench/guests), fresh and
#                     reused, on spike and on `wasmtime serve`
#   spike-sdk-hello   the SDK's hello plugin (a KV grant, the SDK's router)
#   spike-otel-1pct,  the plain component on spike with traces on, sent to
#   spike-otel-100pct a collector on loopback (otlp-sink, which throws them
#                     away), 1% and 100% of requests sampled; `spike` is
#                     the same with traces off
#
# For each: requests/s, p50, p99 and the server's CPU time per request (its
# user + system ticks from /proc over the run, divided by the requests:
# steadier than requests/s on a shared machine). Then allocations per
# request of native and spike, counted by bench/alloc-count preloaded (a
# run of its own: counting perturbs the timing).
#
#   bench/http_hello.sh                       # 2 rounds of 8 s per server
#   ROUNDS=1 DURATION=4s bench/http_hello.sh
#   ONLY="native spike spike-reused" bench/http_hello.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-8s}"
CONNECTIONS="${CONNECTIONS:-32}"
REUSE=1000
out=bench/out
mkdir -p "$out"
source bench/lib.sh

set_up_and_build
cargo build --quiet --release -p native-hello
cargo build --quiet --release -p otlp-sink
bench/guests/build.sh
native="$CARGO_TARGET_DIR/release/native-hello"
wasmtime="${SPIKE_TOOLS_DIR:-$HOME/.cache/spike-tools}/wasmtime-48/bin/wasmtime"
guests="$CARGO_TARGET_DIR/wasm32-wasip2/guest"
plain="$guests/fixture_plain_hello.wasm"
js="$CARGO_TARGET_DIR/bench-guests/js_hello.wasm"
py="$CARGO_TARGET_DIR/bench-guests/py_hello.wasm"

work=$(mktemp -d)
pids=()
trap cleanup EXIT
gcc -O2 -shared -fPIC -o "$work/alloc_count.so" bench/alloc-count/alloc_count.c -ldl

# spike: each component fresh and reused, on routes of their own.
plugin() { # name component prefix reuse
  cp "$2" "$work/plugins/$1.wasm"
  printf 'component = "%s.wasm"\n[[routes]]\nprefix = "%s"\n[limits]\ninstance_reuse = %s\n' \
    "$1" "$3" "$4" >"$work/plugins/$1.toml"
}
mkdir -p "$work/plugins"
plugin plain "$plain" / 0
plugin plain-reused "$plain" /reused $REUSE
plugin js "$js" /js 0
plugin js-reused "$js" /js-reused $REUSE
plugin py "$py" /py 0
plugin py-reused "$py" /py-reused $REUSE
cp "$guests/hello.wasm" "$work/plugins/hello.wasm"
printf 'component = "hello.wasm"\n[[routes]]\nprefix = "/hello"\n[grants]\nkv = ["hello"]\n[env]\nWRITE_ACCESS = "anyone"\n' >"$work/plugins/hello.toml"

declare -A url pid_of
serve() { # name url command...
  local name=$1
  url[$name]=$2
  shift 2
  "$@" >"$out/hello-$name.log" 2>&1 &
  pids+=($!)
  pid_of[$name]=$!
}
serve native http://127.0.0.1:8792/ "$native" 127.0.0.1:8792
serve spike http://127.0.0.1:8788/ "$spike" serve --listen 127.0.0.1:8788 --plugins "$work/plugins" \
  --data "$work/data" --no-watch
serve otlp-sink http://127.0.0.1:8805/ "$CARGO_TARGET_DIR/release/otlp-sink" 127.0.0.1:8805
traced() { # name port ratio
  serve "$1" "http://127.0.0.1:$2/" env OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:8805 \
    OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG="$3" \
    "$spike" serve --listen "127.0.0.1:$2" --plugins "$work/plugins" --data "$work/data-$1" --no-watch
}
traced spike-otel-1pct 8806 0.01
traced spike-otel-100pct 8807 1
for r in reused js js-reused py py-reused; do
  url[spike-$r]=http://127.0.0.1:8788/$r
  pid_of[spike-$r]=${pid_of[spike]}
done
url[spike-sdk-hello]=http://127.0.0.1:8788/hello
pid_of[spike-sdk-hello]=${pid_of[spike]}
wasmtime_serve() { # name port component [reuse]
  serve "$1" "http://127.0.0.1:$2/" "$wasmtime" serve -Scli --addr "127.0.0.1:$2" \
    ${4:+--max-instance-reuse-count "$4"} "$3"
}
wasmtime_serve wasmtime 8789 "$plain"
wasmtime_serve wasmtime-reused 8793 "$plain" $REUSE
wasmtime_serve wasmtime-js 8794 "$js"
wasmtime_serve wasmtime-js-reused 8795 "$js" $REUSE
wasmtime_serve wasmtime-py 8796 "$py"
wasmtime_serve wasmtime-py-reused 8797 "$py" $REUSE
serve workerd http://127.0.0.1:8790/ bash -c 'cd bench/workerd && exec ../node_modules/.bin/workerd serve config.capnp'

# Components of 13 and 18 MB take a while to compile.
wait_ok() {
  for _ in $(seq 1 1200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ] && return 0
    sleep 0.25
  done
  echo "$1 did not answer 200" >&2
  exit 1
}
names="native spike spike-reused wasmtime wasmtime-reused workerd spike-js spike-js-reused
  wasmtime-js wasmtime-js-reused spike-py spike-py-reused wasmtime-py wasmtime-py-reused spike-sdk-hello
  spike-otel-1pct spike-otel-100pct"
names="${ONLY:-$names}"
for n in $names; do wait_ok "${url[$n]}"; done

run() { # name round
  local r p50 p99 cpu errors
  read -r r p50 p99 cpu errors < <(wrk_cpu "${pid_of[$1]}" "${url[$1]}" "$out/wrk-$1-$2.txt")
  printf "%-20s round %s %11.0f req/s  p50 %7.2f ms  p99 %7.2f ms  %8.1f us CPU/request %s\n" \
    "$1" "$2" "$r" "$p50" "$p99" "$cpu" "$errors"
  echo "$1 $2 $r $p50 $p99 $cpu" >>"$out/hello-results.txt"
}

: >"$out/hello-results.txt"
echo "wrk -t2 -c$CONNECTIONS -d$DURATION, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), instance reuse $REUSE"
for round in $(seq 1 "$ROUNDS"); do
  for n in $names; do run "$n" "$round"; done
done

mean() { awk -v n="$1" -v col="$2" '$1 == n {s += $col; c++} END {if (c) printf "%.2f", s / c}' "$out/hello-results.txt"; }
echo
echo "mean over $ROUNDS rounds:"
for n in $names; do
  printf '  %-20s %11.0f req/s  p50 %7s ms  p99 %7s ms  %8s us CPU/request\n' "$n" "$(mean "$n" 3)" "$(mean "$n" 4)" "$(mean "$n" 5)" "$(mean "$n" 6)"
done
ratio() { # label a b column
  local a b
  a=$(mean "$2" "$4") b=$(mean "$3" "$4")
  [ -n "$a" ] && [ -n "$b" ] && awk -v a="$a" -v b="$b" -v l="$1" 'BEGIN {printf "  %-44s %.2fx\n", l, a / b}'
  return 0
}
echo "ratios:"
ratio "spike / wasmtime serve, requests/s" spike wasmtime 3
ratio "spike / native, CPU per request" spike native 6
ratio "spike reused / wasmtime reused, requests/s" spike-reused wasmtime-reused 3
ratio "spike-js / wasmtime-js, requests/s" spike-js wasmtime-js 3
ratio "spike-js reused / workerd, requests/s" spike-js-reused workerd 3
ratio "spike-js reused / wasmtime-js reused, req/s" spike-js-reused wasmtime-js-reused 3
ratio "spike-py / wasmtime-py, requests/s" spike-py wasmtime-py 3
ratio "spike-py reused / wasmtime-py reused, req/s" spike-py-reused wasmtime-py-reused 3
ratio "traces 1% / off, CPU per request" spike-otel-1pct spike 6
ratio "traces 100% / off, CPU per request" spike-otel-100pct spike 6

# Allocations per request: the counter preloaded into a server of its own,
# a warm-up, then the count over a timed run (SIGUSR2 appends it to a file).
# A spike server is counted only once every plugin has loaded (`/readyz`):
# the JavaScript and Python plugins beside the measured one compile in the
# background at first, and their allocations are not the request's.
allocations() { # name url command...
  local name=$1 at=$2 counts="$work/allocs-$1" p n
  shift 2
  ALLOC_COUNT_FILE="$counts" LD_PRELOAD="$work/alloc_count.so" "$@" >"$out/allocs-$name.log" 2>&1 &
  p=$!
  pids+=($p)
  wait_ok "$at"
  [ "$name" = native ] || wait_ok "${at%/*}/readyz"
  wrk -t2 -c"$CONNECTIONS" -d2s "$at" >/dev/null
  kill -USR2 "$p"; sleep 0.2
  wrk -t2 -c"$CONNECTIONS" -d4s "$at" >"$work/allocs-wrk.txt"
  kill -USR2 "$p"; sleep 0.2
  stop "$p"
  n=$(awk '/requests in/ {print $1}' "$work/allocs-wrk.txt")
  awk -v n="$n" -v name="$name" 'NR == 1 {a = $1} NR == 2 {b = $1}
    END {printf "  %-20s %6.1f allocations per request (%d requests)\n", name, (b - a) / n, n}' "$counts"
}
echo
echo "allocations per request:"
for n in native spike spike-reused; do
  [[ " $names " == *" $n "* ]] || continue
  case $n in
    native) allocations native http://127.0.0.1:8802/ "$native" 127.0.0.1:8802 ;;
    spike) allocations spike http://127.0.0.1:8803/ "$spike" serve --listen 127.0.0.1:8803 \
      --plugins "$work/plugins" --data "$work/data-allocs" --no-watch ;;
    spike-reused) allocations spike-reused http://127.0.0.1:8804/reused "$spike" serve \
      --listen 127.0.0.1:8804 --plugins "$work/plugins" --data "$work/data-allocs2" --no-watch ;;
  esac
done
