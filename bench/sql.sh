#!/usr/bin/env bash
# SQL through a plugin, side by side in one run, one load generator (wrk
# on loopback), the same row (an id and 64 bytes of text) everywhere:
#
#   spike-sql      tests/fixtures/store-bench: a point read by primary key
#                  (`SELECT … WHERE id = ?`) and a single-row insert, on
#                  spike's SQL (durable at commit, in the change log)
#   spike-kv       the same plugin reading and writing the same row on KV
#   native         bench/native-sql: the same statements with rusqlite in
#                  plain axum, no wasm (the limit)
#   d1             the same as a Worker with a D1 binding, run locally by
#                  workerd through miniflare (bench/d1), as `wrangler dev`
#   cluster        two spike nodes on one nats-server: reads on the
#                  database's owner, and on the other node (forwarded)
#
# For each: requests/s, p50, p99 and the server's CPU time per request (its
# processes' user + system ticks from /proc over the run, divided by the
# requests: both nodes for the cluster's reads). Then the issue's targets
# as ratios.
#
#   bench/sql.sh                          # 2 rounds of 8 s each
#   ROUNDS=1 DURATION=4s bench/sql.sh
#   ONLY="spike-sql-read d1-read" bench/sql.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-8s}"
CONNECTIONS="${CONNECTIONS:-32}"
out=bench/out/sql
mkdir -p "$out"
source bench/lib.sh

set_up_and_build -p native-sql
cargo build --quiet --profile guest --target wasm32-wasip2 -p fixture-store-bench
store="$CARGO_TARGET_DIR/wasm32-wasip2/guest/fixture_store_bench.wasm"
native="$CARGO_TARGET_DIR/release/native-sql"
nats_server="${SPIKE_NATS_SERVER:-${SPIKE_TOOLS_DIR:-$HOME/.cache/spike-tools}/venv/bin/nats-server}"

work=$(mktemp -d)
pids=()
trap cleanup EXIT
mkdir -p "$work/plugins"
cp "$store" "$work/plugins/store.wasm"
printf 'component = "store.wasm"\n[[routes]]\nprefix = "/store"\nmethods = ["GET", "POST"]\n[grants]\nsql = ["store"]\nkv = ["store"]\n' \
  >"$work/plugins/store.toml"
printf 'wrk.method = "POST"\n' >"$work/post.lua"

launch() { # log command...; sets $last_pid
  local log=$1
  shift
  "$@" >"$out/$log.log" 2>&1 &
  last_pid=$!
  pids+=("$last_pid")
}
spike_on() { # port data [flags...]
  local port=$1 data=$2
  shift 2
  launch "spike-$port" "$spike" serve --listen "127.0.0.1:$port" --plugins "$work/plugins" \
    --data "$data" --no-watch "$@"
}
ready() { # url
  for _ in $(seq 1 600); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "$1 did not answer" >&2
  exit 1
}

cat >"$work/nats.conf" <<NATS
listen: 127.0.0.1:8810
jetstream { store_dir: "$work/jetstream", sync_interval: always }
NATS
launch nats "$nats_server" -c "$work/nats.conf"
wait_port 8810

spike_on 8801 "$work/single"
spike_pid=$last_pid
launch native "$native" 127.0.0.1:8802 "$work/native.sqlite"
native_pid=$last_pid
launch d1 node bench/d1/serve.mjs 8803 "$work/d1"
d1_node=$last_pid
spike_on 8804 "$work/node-1" --storage nats://127.0.0.1:8810/sqlbench --node node-1
owner_pid=$last_pid
spike_on 8805 "$work/node-2" --storage nats://127.0.0.1:8810/sqlbench --node node-2
other_pid=$last_pid
for port in 8801 8804 8805; do ready "http://127.0.0.1:$port/readyz"; done
wait_port 8802
wait_port 8803
# workerd, which miniflare starts, does the work: its CPU is counted.
d1_pid=$(pgrep -P "$d1_node" workerd | head -1)
[ -n "$d1_pid" ] || { echo "no workerd under miniflare" >&2; exit 1; }

# Seeded: the rows to read (node 1 first, so that it owns the database).
for port in 8801 8803 8804; do
  curl -fs -X POST "http://127.0.0.1:$port/store/seed" >/dev/null
done
ready http://127.0.0.1:8805/store/sql/7

declare -A url cpu_pids lua
case_of() { # name url pids [lua]
  url[$1]=$2
  cpu_pids[$1]=$3
  lua[$1]=${4:-}
}
case_of spike-sql-read http://127.0.0.1:8801/store/sql/7 "$spike_pid"
case_of spike-kv-read http://127.0.0.1:8801/store/kv/7 "$spike_pid"
case_of native-read http://127.0.0.1:8802/store/sql/7 "$native_pid"
case_of d1-read http://127.0.0.1:8803/store/sql/7 "$d1_pid"
case_of spike-sql-insert http://127.0.0.1:8801/store/sql "$spike_pid" "$work/post.lua"
case_of spike-kv-write http://127.0.0.1:8801/store/kv "$spike_pid" "$work/post.lua"
case_of native-insert http://127.0.0.1:8802/store/sql "$native_pid" "$work/post.lua"
case_of d1-insert http://127.0.0.1:8803/store/sql "$d1_pid" "$work/post.lua"
case_of cluster-owner-read http://127.0.0.1:8804/store/sql/7 "$owner_pid $other_pid"
case_of cluster-forwarded-read http://127.0.0.1:8805/store/sql/7 "$owner_pid $other_pid"
names="spike-sql-read spike-kv-read native-read d1-read spike-sql-insert spike-kv-write
  native-insert d1-insert cluster-owner-read cluster-forwarded-read"
names="${ONLY:-$names}"

ticks() { local t=0; for p in $1; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
run() { # name round
  local name=$1 file="$out/wrk-$1-$2.txt" before after
  before=$(ticks "${cpu_pids[$name]}")
  wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency ${lua[$name]:+-s "${lua[$name]}"} "${url[$name]}" >"$file"
  after=$(ticks "${cpu_pids[$name]}")
  local line
  line=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /requests in/ {n = $1} /^Requests\/sec:/ {r = $2} $1 == "50%" {p50 = ms($2)} $1 == "99%" {p99 = ms($2)}
    /Non-2xx|Socket errors/ {errors = errors " " $0}
    END { printf "%s %s %s %.2f%s\n", r, p50, p99, t / hz * 1e6 / n, errors }' "$file")
  local r p50 p99 cpu errors
  read -r r p50 p99 cpu errors <<<"$line"
  printf "%-24s round %s %9.0f req/s  p50 %7.2f ms  p99 %7.2f ms  %8.1f us CPU/request %s\n" \
    "$name" "$2" "$r" "$p50" "$p99" "$cpu" "$errors"
  echo "$name $2 $r $cpu" >>"$out/results.txt"
}

: >"$out/results.txt"
echo "wrk -t2 -c$CONNECTIONS -d$DURATION, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
for round in $(seq 1 "$ROUNDS"); do
  for n in $names; do run "$n" "$round"; done
done

# Medians over the rounds, then the targets.
med() { median "$(awk -v n="$1" -v f="$2" '$1 == n {printf "%s ", $f}' "$out/results.txt")"; }
echo
echo "medians over $ROUNDS rounds, and the issue's targets:"
ratio() { # label a b target
  local a b
  a=$(med "$2" 3); b=$(med "$3" 3)
  [ -n "$a" ] && [ -n "$b" ] && awk -v l="$1" -v a="$a" -v b="$b" -v t="$4" \
    'BEGIN { printf "  %-44s %6.2fx  (target %s)\n", l, a / b, t }' || true
}
ratio "SQL reads / D1 reads (req/s)" spike-sql-read d1-read ">= 2"
ratio "SQL inserts / D1 inserts (req/s)" spike-sql-insert d1-insert ">= 1"
ratio "forwarded reads / the owner's (req/s)" cluster-forwarded-read cluster-owner-read ">= 0.5"
ratio "SQL reads / native rusqlite reads (req/s)" spike-sql-read native-read "the limit"
ratio "SQL inserts / native rusqlite inserts (req/s)" spike-sql-insert native-insert "the limit"
sql_cpu=$(med spike-sql-read 4); kv_cpu=$(med spike-kv-read 4)
[ -n "$sql_cpu" ] && [ -n "$kv_cpu" ] && awk -v s="$sql_cpu" -v k="$kv_cpu" \
  'BEGIN { printf "  %-44s %6.1f us  (target <= 5 us)\n", "SQL read CPU - KV read CPU, per request", s - k }' || true
