#!/usr/bin/env bash
# The CMS against a plain KV read, side by side in one run, on one spike:
#
#   kv-read        a plugin (tests/fixtures/probe) reading one KV key
#   cms-get-live   GET of a 1 KiB public document (/live-cms/), no token
#   cms-get-mine   GET of the caller's own 1 KiB document (/my-cms/), with
#                  an HS256 token (the auth hook's cache answers)
#   cms-put-one    PUT of one 1 KiB document with a token by every
#                  connection: a new version each time, writers taking turns
#   cms-put-many   the same, each request to one of 1000 documents
#   kv-write       the probe plugin writing one KV key
#
#   bench/cms.sh                      # 2 rounds of 10 s each, 32 connections
#   ROUNDS=1 DURATION=5s bench/cms.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-32}"
out=bench/out/cms
mkdir -p "$out"
source bench/lib.sh

set_up_and_build
guests="$CARGO_TARGET_DIR/wasm32-wasip2/guest"
python="${SPIKE_TOOLS_DIR:-$HOME/.cache/spike-tools}/venv/bin/python"

work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/plugins"
cp "$guests/auth.wasm" "$guests/cms.wasm" "$work/plugins/"
cp plugins/cms.toml "$work/plugins/cms.toml"
cat >"$work/plugins/auth.toml" <<'EOF'
component = "auth.wasm"
[[routes]]
prefix = "/api/logged_in"
auth = "required"
[grants]
kv = ["auth"]
secrets = ["hs-key"]
[env]
HS256_SECRET = "hs-key"
EOF
cp "$guests/fixture_probe.wasm" "$work/plugins/probe.wasm"
printf 'component = "probe.wasm"\n[[routes]]\nprefix = "/probe"\n[grants]\nkv = ["bench"]\n' >"$work/plugins/probe.toml"
token=$("$python" -c 'import jwt, time; print(jwt.encode({"sub": "bench", "exp": int(time.time()) + 3600}, "bench-key"))')

SPIKE_SECRET_HS_KEY=bench-key "$spike" serve --listen 127.0.0.1:8794 --plugins "$work/plugins" \
  --data "$work/data" --no-watch >"$out/spike.log" 2>&1 &
pid=$!
for _ in $(seq 1 200); do curl -fs http://127.0.0.1:8794/readyz >/dev/null 2>&1 && break; sleep 0.1; done

base=http://127.0.0.1:8794
head -c 1024 /dev/urandom | base64 -w0 | head -c 1024 >"$work/doc.txt"
curl -fs -X PUT --data-binary @"$work/doc.txt" "$base/probe/kv/doc?ns=bench" >/dev/null
curl -fs -X PUT -H "authorization: Bearer $token" -H 'content-type: text/markdown' \
  --data-binary @"$work/doc.txt" "$base/live-cms/doc.md" >/dev/null
curl -fs -X PUT -H "authorization: Bearer $token" -H 'content-type: text/markdown' \
  --data-binary @"$work/doc.txt" "$base/my-cms/doc.md" >/dev/null
for url in "$base/probe/kv/doc?ns=bench" "$base/live-cms/doc.md"; do
  cmp -s <(curl -fs "$url") "$work/doc.txt" || { echo "$url does not answer the document" >&2; exit 1; }
done
cat >"$work/put.lua" <<EOF
wrk.method = "PUT"
wrk.body = io.open("$work/doc.txt"):read("*a")
wrk.headers["content-type"] = "text/markdown"
wrk.headers["authorization"] = "Bearer $token"
EOF
cp "$work/put.lua" "$work/put-many.lua"
cat >>"$work/put-many.lua" <<'EOF'
request = function()
  return wrk.format(nil, "/live-cms/many/" .. math.random(1, 1000) .. ".md")
end
EOF

run() { # name round wrk-args...
  local name=$1 round=$2
  shift 2
  local file="$out/wrk-$name-$round.txt"
  wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$@" >"$file"
  local rps p50 p99 errors
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$file")
  p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$file")")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$file")")
  errors=$(awk '/Non-2xx|Socket errors/ {print}' "$file" | tr '\n' ' ')
  printf '%-13s round %s  %9s req/s  p50 %6.2f ms  p99 %6.2f ms  %s\n' "$name" "$round" "$rps" "$p50" "$p99" "$errors"
  echo "$name $rps $p50 $p99" >>"$out/results.txt"
}

: >"$out/results.txt"
echo "wrk -t2 -c$CONNECTIONS -d$DURATION, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
for round in $(seq 1 "$ROUNDS"); do
  run kv-read "$round" "$base/probe/kv/doc?ns=bench"
  run cms-get-live "$round" "$base/live-cms/doc.md"
  run cms-get-mine "$round" -H "authorization: Bearer $token" "$base/my-cms/doc.md"
  run cms-put-one "$round" -s "$work/put.lua" "$base/live-cms/bench.md"
  run cms-put-many "$round" -s "$work/put-many.lua" "$base/live-cms/many"
  run kv-write "$round" -s "$work/put.lua" "$base/probe/kv/written?ns=bench"
done

mean() { awk -v n="$1" -v col="$2" '$1 == n {s += $col; c++} END {printf "%.1f", s / c}' "$out/results.txt"; }
echo
echo "mean over $ROUNDS rounds:"
for n in kv-read cms-get-live cms-get-mine cms-put-one cms-put-many kv-write; do
  printf '  %-13s %9s req/s  p50 %6s ms  p99 %6s ms\n' "$n" "$(mean $n 2)" "$(mean $n 3)" "$(mean $n 4)"
done
awk -v k="$(mean kv-read 2)" -v l="$(mean cms-get-live 2)" -v m="$(mean cms-get-mine 2)" \
    -v w="$(mean kv-write 2)" -v p1="$(mean cms-put-one 2)" -v pm="$(mean cms-put-many 2)" 'BEGIN {
  printf "CMS GET / KV read: %.2fx public, %.2fx own (target >= 0.8)\n", l / k, m / k
  printf "CMS PUT / KV write: %.2fx one document, %.2fx many\n", p1 / w, pm / w
}'
