#!/usr/bin/env bash
# Screenshots side by side in one run: a 1280x800 PNG of the same local page
# (bench/render-page.html, served by a small Node server) taken by
#
#   spike    the render plugin over the host's warm Chromium (a fresh browser
#            context per render, prepared ahead), the cache bypassed
#   warm     puppeteer-core with one browser open and a fresh context per
#            screenshot (what a careful Node service does)
#   launch   puppeteer-core launching Chromium per request (the seed
#            system's renderer worker)
#
# all with Debian's Chromium and the developers' guide's flags (spike adds
# two of its own, see host/src/caps/render/browser.rs). Latency one at a
# time, spaced (700 ms between renders) and back to back (p50, p99), then
# renders/s with $CONCURRENCY in flight for $SECONDS_EACH (spike's
# --render-pages is $CONCURRENCY too). Ratios are printed.
#
#   bench/render.sh                        # 2 rounds
#   ROUNDS=1 COUNT=20 SECONDS_EACH=10 bench/render.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"
ROUNDS="${ROUNDS:-2}"
COUNT="${COUNT:-40}"
LAUNCH_COUNT="${LAUNCH_COUNT:-15}"
SECONDS_EACH="${SECONDS_EACH:-15}"
CONCURRENCY="${CONCURRENCY:-2}"
chromium=/usr/bin/chromium
out=bench/out/render
mkdir -p "$out"
source bench/lib.sh

set_up_and_build

work=$(mktemp -d)
pids=()
trap cleanup EXIT

node -e '
  const http = require("http"), fs = require("fs");
  const page = fs.readFileSync("bench/render-page.html");
  http.createServer((q, s) => { s.writeHead(200, {"content-type": "text/html"}); s.end(page); })
    .listen(8881, "127.0.0.1");' >"$out/page-server.log" 2>&1 &
pids+=($!)
wait_port 8881
page=http://127.0.0.1:8881/

mkdir -p "$work/plugins"
cp plugins/render.wasm "$work/plugins/render.wasm"
cat >"$work/plugins/render.toml" <<'TOML'
component = "render.wasm"
[[routes]]
prefix = "/render"
[grants]
render = true
blob = ["renders"]
[limits]
memory_mib = 256
timeout_ms = 45000
TOML
"$spike" serve --listen 127.0.0.1:8882 --plugins "$work/plugins" --data "$work/data" --no-watch \
  --render-allow 127.0.0.1:8881 --render-pages "$CONCURRENCY" >"$out/spike.log" 2>&1 &
pids+=($!)
spike_pid=$!
wait_port 8882
# The plugin loaded and the browser's contexts prepared.
for _ in $(seq 1 100); do
  curl -sf -o /dev/null "http://127.0.0.1:8882/render/screenshot?url=$page&cache=no" && break
  sleep 0.2
done

for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round"
  node bench/render.mjs spike "$page" http://127.0.0.1:8882 "$COUNT" "$SECONDS_EACH" "$CONCURRENCY" | tee "$out/spike-$round.jsonl"
  node bench/render.mjs warm "$page" "$chromium" "$COUNT" "$SECONDS_EACH" "$CONCURRENCY" | tee "$out/warm-$round.jsonl"
  node bench/render.mjs launch "$page" "$chromium" "$LAUNCH_COUNT" | tee "$out/launch-$round.jsonl"
  s_sp=$(grep spaced "$out/spike-$round.jsonl"); w_sp=$(grep spaced "$out/warm-$round.jsonl")
  s_seq=$(grep sequential "$out/spike-$round.jsonl"); s_con=$(grep concurrent "$out/spike-$round.jsonl")
  w_seq=$(grep sequential "$out/warm-$round.jsonl"); w_con=$(grep concurrent "$out/warm-$round.jsonl")
  l_seq=$(grep sequential "$out/launch-$round.jsonl")
  awk -v s="$(field "$s_seq" p50_ms)" -v w="$(field "$w_seq" p50_ms)" -v l="$(field "$l_seq" p50_ms)" \
      -v ss="$(field "$s_sp" p50_ms)" -v ws="$(field "$w_sp" p50_ms)" \
      -v sr="$(field "$s_con" per_s)" -v wr="$(field "$w_con" per_s)" 'BEGIN {
    printf "p50 spaced: spike %.1f ms, warm puppeteer %.1f ms: launch per request / spike %.2fx (target >= 6x)\n", ss, ws, l / ss
    printf "p50 back to back: spike %.1f ms, warm puppeteer %.1f ms, launch per request %.1f ms\n", s, w, l
    printf "  spike is %.2fx faster than a launch per request (target >= 6x), %.2fx the warm p50\n", l / s, w / s
    printf "renders/s with '"$CONCURRENCY"' in flight: spike %.2f, warm puppeteer %.2f: %.2fx (target >= 1.5x)\n", sr, wr, sr / wr
  }'
  echo "spike RSS: $(rss_kib "$spike_pid") KiB (the host; Chromium is its own processes)"
done
