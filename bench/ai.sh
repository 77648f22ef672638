#!/usr/bin/env bash
# What AI routing adds, side by side in one run: the same chat completion
# (OpenAI format, gpt-4o) sent to
#
#   direct    the fake provider itself (tests/fake_ai/, `fake-ai`)
#   spike     spike's AI plugin (components/ai) in front of that fake:
#             routing, quota check, breaker reads, the call log written
#   litellm   LiteLLM's proxy (PyPI `litellm[proxy]`, one worker) in front
#             of the same fake, the peer users would pick
#
# For each: latency one request at a time (p50 and p99; bench/ai.mjs with a
# kept-alive connection), time to the first streamed byte (`stream: true`,
# same), and requests/s with 16 connections (wrk). Ratios are printed.
#
#   bench/ai.sh                      # 2 rounds, 10 s of wrk each
#   ROUNDS=1 DURATION=5s COUNT=500 bench/ai.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-10s}"
COUNT="${COUNT:-2000}"
out=bench/out/ai
mkdir -p "$out"
source bench/lib.sh

set_up_and_build
cargo build --quiet --release -p spike-e2e --bin fake-ai
litellm="${SPIKE_TOOLS_DIR:-$HOME/.cache/spike-tools}/litellm/bin/litellm"
key=sk-fake-openai-5f1c2a9e7b3d   # OPENAI_KEY in tests/fake_ai/mod.rs

work=$(mktemp -d)
pids=()
trap cleanup EXIT

"$CARGO_TARGET_DIR/release/fake-ai" 127.0.0.1:8871 >"$out/fake.log" 2>&1 &
pids+=($!)
fake_pid=$!
wait_port 8871

mkdir -p "$work/plugins"
cp plugins/ai.wasm "$work/plugins/ai.wasm"
cat >"$work/plugins/ai.toml" <<'EOF'
component = "ai.wasm"
[[routes]]
prefix = "/v1"
[grants]
kv = ["ai"]
outbound = ["127.0.0.1:8871"]
secrets = ["openai-api-key"]
[quotas.ai]
requests = 1000000000
per_s = 1
[env]
PROVIDERS = '[{"name": "fake", "kind": "openai", "base_url": "http://127.0.0.1:8871/v1", "models": ["gpt-*"], "api_key_secret": "openai-api-key"}]'
QUOTA = "ai"
EOF
SPIKE_SECRET_OPENAI_API_KEY=$key "$spike" serve --listen 127.0.0.1:8872 --plugins "$work/plugins" \
  --data "$work/data" --no-watch >"$out/spike.log" 2>&1 &
pids+=($!)
spike_pid=$!

cat >"$work/litellm.yaml" <<EOF
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_base: http://127.0.0.1:8871/v1
      api_key: $key
EOF
# The master key is the key the clients send (it must have one to start).
LITELLM_MASTER_KEY=$key LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_TELEMETRY=False \
  "$litellm" --config "$work/litellm.yaml" --host 127.0.0.1 --port 8873 --num_workers 1 \
  >"$out/litellm.log" 2>&1 &
pids+=($!)
litellm_pid=$!
wait_port 8872
for _ in $(seq 1 600); do (exec 3<>/dev/tcp/127.0.0.1/8873) 2>/dev/null && break; sleep 0.2; done

declare -A url=(
  [direct]=http://127.0.0.1:8871/v1/chat/completions
  [spike]=http://127.0.0.1:8872/v1/chat/completions
  [litellm]=http://127.0.0.1:8873/v1/chat/completions
)
# Every target answers before anything is measured (spike compiles its
# plugin first; LiteLLM takes a while to start).
for t in direct spike litellm; do
  for _ in $(seq 1 300); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $key" \
      -H 'content-type: application/json' \
      -d '{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}' "${url[$t]}" || true)
    [ "$code" = 200 ] && break
    sleep 0.2
  done
  [ "$code" = 200 ] || { echo "$t answered $code" >&2; exit 1; }
done

cat >"$work/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"model":"gpt-4o","messages":[{"role":"user","content":"hello there, how are you today?"}]}'
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer $key"
EOF

declare -A lat50 lat99 ttfb50 ttfb99 rps
for round in $(seq 1 "$ROUNDS"); do
  for t in direct spike litellm; do
    count=$COUNT
    [ "$t" = litellm ] && count=$((COUNT / 4))   # LiteLLM takes ~10 ms a call
    line=$(node bench/ai.mjs "${url[$t]}" latency "$count" "$key")
    lat50[$t]+="$(field "$line" p50) "; lat99[$t]+="$(field "$line" p99) "
    line=$(node bench/ai.mjs "${url[$t]}" ttfb "$count" "$key")
    ttfb50[$t]+="$(field "$line" p50) "; ttfb99[$t]+="$(field "$line" p99) "
    file="$out/wrk-$t-$round.txt"
    wrk -t2 -c16 -d"$DURATION" --latency -s "$work/post.lua" "${url[$t]}" >"$file"
    if grep -q "Non-2xx" "$file"; then echo "$t: errors under load, see $file" >&2; exit 1; fi
    rps[$t]+="$(awk '/Requests\/sec/ {print $2}' "$file") "
    printf 'round %s %-8s latency p50 %s ms p99 %s ms | first byte p50 %s ms p99 %s ms | %s req/s\n' \
      "$round" "$t" "$(awk '{print $NF}' <<<"${lat50[$t]}")" "$(awk '{print $NF}' <<<"${lat99[$t]}")" \
      "$(awk '{print $NF}' <<<"${ttfb50[$t]}")" "$(awk '{print $NF}' <<<"${ttfb99[$t]}")" \
      "$(awk '{print $NF}' <<<"${rps[$t]}")"
  done
done

echo
echo "medians over $ROUNDS round(s):"
for t in direct spike litellm; do
  printf '%-8s latency p50 %s ms p99 %s ms | first byte p50 %s ms p99 %s ms | %s req/s\n' "$t" \
    "$(median "${lat50[$t]}")" "$(median "${lat99[$t]}")" "$(median "${ttfb50[$t]}")" \
    "$(median "${ttfb99[$t]}")" "$(median "${rps[$t]}")"
done
d50=$(median "${lat50[direct]}"); s50=$(median "${lat50[spike]}"); l50=$(median "${lat50[litellm]}")
dt=$(median "${ttfb50[direct]}"); st=$(median "${ttfb50[spike]}"); lt=$(median "${ttfb50[litellm]}")
dr=$(median "${rps[direct]}"); sr=$(median "${rps[spike]}"); lr=$(median "${rps[litellm]}")
awk -v d="$d50" -v s="$s50" -v l="$l50" -v dt="$dt" -v st="$st" -v lt="$lt" -v dr="$dr" -v sr="$sr" -v lr="$lr" 'BEGIN {
  printf "added p50 latency: spike %.3f ms, litellm %.3f ms (target < 1 ms)\n", s - d, l - d
  printf "first byte over direct: spike +%.3f ms, litellm +%.3f ms (target within 2 ms)\n", st - dt, lt - dt
  printf "requests/s: spike %.2fx direct (target >= 0.4x), %.1fx litellm\n", sr / dr, sr / lr
}'
printf 'RSS after the runs: spike %s MiB, litellm %s MiB, fake %s MiB\n' \
  "$(( $(rss_kib "$spike_pid") / 1024 ))" "$(( $(rss_kib "$litellm_pid") / 1024 ))" "$(( $(rss_kib "$fake_pid") / 1024 ))"
