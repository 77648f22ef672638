#!/usr/bin/env bash
# The npm plugin (plugins/npm.toml in front of Verdaccio on loopback,
# holding the test packages of tests/npm), side by side in one run:
#
#   cold builds   each package's module graph fetched as a browser fetches
#                 it, every module built (bench/npm.mjs), against esbuild
#                 bundling the same entry (native, in-process API)
#   cached        one kept module (react's production build, 20 KB) with
#                 wrk, against the same bytes as a static file of the same
#                 server (--site), server CPU per request from /proc
#
#   bench/npm.sh                 # 2 rounds
#   ROUNDS=1 DURATION=5s bench/npm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-8s}"
out=bench/out
mkdir -p "$out"
source bench/lib.sh

set_up_and_build

work=$(mktemp -d)
pids=()
trap cleanup EXIT
tools="${SPIKE_TOOLS_DIR:-$HOME/.cache/spike-tools}"
cp -r "$tools/npm-registry/storage" "$tools/npm-registry/htpasswd" "$work/"
node tests/node/npm-registry.mjs config "$work" >/dev/null
node tests/node/node_modules/verdaccio/bin/verdaccio --config "$work/config.yaml" \
  --listen 127.0.0.1:8796 >"$out/npm-verdaccio.log" 2>&1 &
pids+=($!)
wait_port 8796

mkdir -p "$work/plugins" "$work/site/assets"
cp plugins/npm.toml plugins/npm.wasm "$work/plugins/"
"$spike" serve --listen 127.0.0.1:8795 --plugins "$work/plugins" --data "$work/data" --no-watch \
  --npm-registry http://127.0.0.1:8796 --site "/=$work/site" >"$out/npm-spike.log" 2>&1 &
spike_pid=$!
pids+=("$spike_pid")
wait_port 8795
for _ in $(seq 1 600); do grep -q "plugin active" "$out/npm-spike.log" && break; sleep 0.1; done

# Every tarball fetched and unpacked once: the cold rounds build modules,
# they do not fetch.
node bench/npm.mjs http://127.0.0.1:8795 warm-up >/dev/null
module=/npm/react@19.3.1/cjs/react.production.js
curl -sf "http://127.0.0.1:8795$module" >"$work/site/assets/module.0123456789.js"
# The site is read at start: restart to serve the copy.
stop "$spike_pid"
"$spike" serve --listen 127.0.0.1:8795 --plugins "$work/plugins" --data "$work/data" --no-watch \
  --npm-registry http://127.0.0.1:8796 --site "/=$work/site" >>"$out/npm-spike.log" 2>&1 &
spike_pid=$!
pids+=("$spike_pid")
wait_port 8795
for _ in $(seq 1 600); do [ "$(grep -c "plugin active" "$out/npm-spike.log")" -ge 2 ] && break; sleep 0.1; done
curl -sf "http://127.0.0.1:8795$module" >/dev/null

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round: cold builds (spike_ms: the module graph through /npm/; esbuild_ms: one bundle)"
  SPIKE_PID=$spike_pid node bench/npm.mjs http://127.0.0.1:8795 "round-$round-$RANDOM"
  echo "round $round: a kept module ($(wc -c <"$work/site/assets/module.0123456789.js") bytes), req/s p50 p99 cpu_us/req"
  echo "  npm module:  $(wrk_cpu "$spike_pid" "http://127.0.0.1:8795$module" "$out/npm-wrk-module.txt")"
  echo "  static file: $(wrk_cpu "$spike_pid" "http://127.0.0.1:8795/assets/module.0123456789.js" "$out/npm-wrk-static.txt")"
done
