#!/usr/bin/env bash
# What the auth hook and rate limits cost, side by side in one run: GET of
# the same small plugin (plain hello) on four routes of one spike:
#
#   plain      no auth, no rate limit
#   limited    a rate limit by IP, high enough never to refuse
#   auth-hit   auth = "required", the same RS256 token every time
#              (the host's token cache answers)
#   auth-miss  the same route on a second spike started with
#              --auth-cache-entries 0: every request runs the auth
#              component (KV lookup of the cached key set, RS256 check)
#
# Latency is measured one request at a time (wrk -c1), where p50 is the
# cost of a request and not of queueing behind 31 others; throughput with
# 32 connections. Tokens are minted by PyJWT; the key set is served by
# python's http.server.
#
#   bench/auth.sh                     # 2 rounds of 10 s per route and mode
#   ROUNDS=1 DURATION=5s bench/auth.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-10s}"
out=bench/out/auth
mkdir -p "$out"
source bench/lib.sh

set_up_and_build
guests="$CARGO_TARGET_DIR/wasm32-wasip2/guest"
python="${SPIKE_TOOLS_DIR:-$HOME/.cache/spike-tools}/venv/bin/python"

work=$(mktemp -d)
pids=()
trap cleanup EXIT

# A key pair, its JWKS, and a token valid for an hour.
mkdir -p "$work/jwks"
"$python" - "$work" <<'EOF'
import json, sys, time
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
work = sys.argv[1]
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
jwk.update(kid="bench", alg="RS256", use="sig")
json.dump({"keys": [jwk]}, open(f"{work}/jwks/jwks.json", "w"))
now = int(time.time())
claims = {"sub": "user_bench", "sid": "sess_bench", "iss": "https://bench.test",
          "iat": now, "exp": now + 3600}
open(f"{work}/token", "w").write(jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench"}))
EOF
token=$(cat "$work/token")
"$python" -m http.server 8797 --bind 127.0.0.1 --directory "$work/jwks" >"$out/jwks.log" 2>&1 &
pids+=($!)

mkdir -p "$work/plugins"
cp "$guests/fixture_plain_hello.wasm" "$work/plugins/plain.wasm"
cat >"$work/plugins/plain.toml" <<'EOF'
component = "plain.wasm"
[[routes]]
prefix = "/plain"
[[routes]]
prefix = "/limited"
rate_limit = { requests = 1000000000, per_s = 1, key = "ip" }
[[routes]]
prefix = "/authed"
auth = "required"
EOF
cp "$guests/auth.wasm" "$work/plugins/auth.wasm"
cat >"$work/plugins/auth.toml" <<'EOF'
component = "auth.wasm"
[[routes]]
prefix = "/api/logged_in"
auth = "required"
[grants]
kv = ["auth"]
outbound = ["127.0.0.1:8797"]
[env]
ISSUER = "https://bench.test"
JWKS_URL = "http://127.0.0.1:8797/jwks.json"
EOF

wait_up() {
  for _ in $(seq 1 200); do
    curl -fs "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server at $1 did not come up" >&2
  exit 1
}
"$spike" serve --listen 127.0.0.1:8795 --plugins "$work/plugins" --data "$work/data" --no-watch \
  >"$out/spike.log" 2>&1 &
pids+=($!)
"$spike" serve --listen 127.0.0.1:8796 --plugins "$work/plugins" --data "$work/data-nocache" --no-watch \
  --auth-cache-entries 0 >"$out/spike-nocache.log" 2>&1 &
pids+=($!)
wait_up http://127.0.0.1:8795/readyz
wait_up http://127.0.0.1:8796/readyz
# Each route answers as it should before anything is measured.
for url in http://127.0.0.1:8795/authed http://127.0.0.1:8796/authed; do
  curl -fs -H "authorization: Bearer $token" "$url" >/dev/null || { echo "$url refused the token" >&2; exit 1; }
done
status=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8795/authed)
[ "$status" = 401 ] || { echo "/authed without a token answered $status" >&2; exit 1; }

# wrk's latency figures in µs, whatever unit it printed.
to_us() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); print v + 0 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); print v * 1000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000000 }
    else print v }'
}

run() { # name url connections round
  local file="$out/wrk-$1-c$3-$4.txt"
  wrk -t1 -c"$3" -d"$DURATION" --latency -H "authorization: Bearer $token" "$2" >"$file"
  local rps p50 p99 errors
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$file")
  p50=$(to_us "$(awk '$1 == "50%" {print $2}' "$file")")
  p99=$(to_us "$(awk '$1 == "99%" {print $2}' "$file")")
  errors=$(awk '/Non-2xx|Socket errors/ {print}' "$file" | tr '\n' ' ')
  printf '%-10s c%-3s round %s  %9s req/s  p50 %7.1f us  p99 %7.1f us  %s\n' "$1" "$3" "$4" "$rps" "$p50" "$p99" "$errors"
  echo "$1 $3 $rps $p50 $p99" >>"$out/results.txt"
}

: >"$out/results.txt"
echo "wrk -t1 -d$DURATION, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
for round in $(seq 1 "$ROUNDS"); do
  for c in 1 32; do
    run plain http://127.0.0.1:8795/plain "$c" "$round"
    run limited http://127.0.0.1:8795/limited "$c" "$round"
    run auth-hit http://127.0.0.1:8795/authed "$c" "$round"
    run auth-miss http://127.0.0.1:8796/authed "$c" "$round"
  done
done

mean() { awk -v n="$1" -v c="$2" -v col="$3" '$1 == n && $2 == c {s += $col; k++} END {printf "%.1f", s / k}' "$out/results.txt"; }
echo
echo "mean over $ROUNDS rounds (one connection: latency; 32: throughput):"
for n in plain limited auth-hit auth-miss; do
  printf '  %-10s p50 %7s us  p99 %7s us   %9s req/s at c32\n' "$n" "$(mean $n 1 4)" "$(mean $n 1 5)" "$(mean $n 32 3)"
done
awk -v p="$(mean plain 1 4)" -v l="$(mean limited 1 4)" -v h="$(mean auth-hit 1 4)" -v m="$(mean auth-miss 1 4)" \
    -v pr="$(mean plain 32 3)" -v lr="$(mean limited 32 3)" -v hr="$(mean auth-hit 32 3)" -v mr="$(mean auth-miss 32 3)" 'BEGIN {
  printf "added at p50: rate limit %+.1f us (target <= 5), auth cache hit %+.1f us (target <= 30), auth RS256 miss %+.1f us\n", l - p, h - p, m - p
  printf "throughput vs plain: rate limit %.2fx, auth hit %.2fx, auth miss %.2fx\n", lr / pr, hr / pr, mr / pr
}'
