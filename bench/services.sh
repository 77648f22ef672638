#!/usr/bin/env bash
# A service binding call against the same call over loopback HTTP, side by
# side in one run on one spike server:
#
#   direct    GET /probe/count: the callee alone, as a client calls it
#   binding   GET /front?...: the fetch fixture calls the probe at
#             http://probe.spike.internal/probe/count (in-process)
#   loopback  the same call to http://127.0.0.1:<spike's port>/probe/count
#             (an outgoing HTTP request back into the same server, over a
#             kept-alive connection)
#
# For each: requests/s, p50, p99 and the server's CPU time per request. The
# added cost of a call is its row's CPU per request minus `direct`'s (both
# calls run the probe once; the caller's own instance is in both).
#
#   bench/services.sh                    # 3 rounds of 5 s per row
#   ROUNDS=1 DURATION=3s bench/services.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-5s}"
CONNECTIONS="${CONNECTIONS:-32}"
PORT=8798
out=bench/out
mkdir -p "$out"
source bench/lib.sh

set_up_and_build
guests="$CARGO_TARGET_DIR/wasm32-wasip2/guest"
work=$(mktemp -d)
pids=()
trap cleanup EXIT
mkdir -p "$work/plugins"
cp "$guests/fixture_fetch.wasm" "$work/plugins/front.wasm"
cp "$guests/fixture_probe.wasm" "$work/plugins/probe.wasm"
cat >"$work/plugins/front.toml" <<EOF
component = "front.wasm"
[[routes]]
prefix = "/front"
[grants]
services = ["probe"]
outbound = ["127.0.0.1:$PORT"]
EOF
printf 'component = "probe.wasm"\n[[routes]]\nprefix = "/probe"\n' >"$work/plugins/probe.toml"

"$spike" serve --listen "127.0.0.1:$PORT" --plugins "$work/plugins" --data "$work/data" \
  --no-watch >"$out/services-spike.log" 2>&1 &
pids+=($!)
server=$!
base="http://127.0.0.1:$PORT"
declare -A url=(
  [direct]="$base/probe/count"
  [binding]="$base/front?authority=probe.spike.internal&path=/probe/count"
  [loopback]="$base/front?authority=127.0.0.1:$PORT&path=/probe/count"
)
names="direct binding loopback"
for n in $names; do
  for _ in $(seq 1 200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "${url[$n]}")" = 200 ] && break
    sleep 0.1
  done
  body=$(curl -s "${url[$n]}")
  [ "$n" = direct ] || [[ "$body" == "upstream 200: "* ]] || { echo "$n answered: $body" >&2; exit 1; }
done

results="$out/services-results.txt"
: >"$results"
echo "wrk -t2 -c$CONNECTIONS -d$DURATION, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)"
for round in $(seq 1 "$ROUNDS"); do
  for n in $names; do
    read -r r p50 p99 cpu errors < <(wrk_cpu "$server" "${url[$n]}" "$out/wrk-services-$n.txt")
    printf "%-9s round %s %9.0f req/s  p50 %6.2f ms  p99 %6.2f ms  %7.1f us CPU/request %s\n" \
      "$n" "$round" "$r" "$p50" "$p99" "$cpu" "$errors"
    echo "$n $round $r $p50 $p99 $cpu" >>"$results"
  done
done

mean() { awk -v n="$1" -v col="$2" '$1 == n {s += $col; c++} END {printf "%.2f", s / c}' "$results"; }
echo
echo "mean over $ROUNDS rounds:"
for n in $names; do
  printf '  %-9s %9.0f req/s  p50 %6s ms  p99 %6s ms  %7s us CPU/request\n' \
    "$n" "$(mean "$n" 3)" "$(mean "$n" 4)" "$(mean "$n" 5)" "$(mean "$n" 6)"
done
awk -v d="$(mean direct 6)" -v b="$(mean binding 6)" -v l="$(mean loopback 6)" 'BEGIN {
  printf "added CPU per call: binding %.1f us, loopback HTTP %.1f us: binding / loopback %.2fx (target <= 0.5x)\n",
    b - d, l - d, (b - d) / (l - d) }'
