#!/usr/bin/env bash
# The transpiler, side by side in one run over one corpus (the 274
# TypeScript / TSX files that TanStack Query, Router, Store and tRPC ship,
# 1.6 MB; tests/node/corpus.mjs):
#
#   spike          POST /transpile of the shipped plugin (release host, no cache)
#   esbuild        npm esbuild, transform() (native Go)
#   esbuild-wasm   npm esbuild-wasm, transform() (what spike.land ran)
#   @swc/core      npm @swc/core, transform() (native swc)
#   swc native     the component's own compile path built natively (no wasm,
#                  no HTTP): components/transpile's native_corpus_benchmark
#
# Each: files/s and p50 / p99 per file one at a time, and files/s with 4 in
# flight (bench/transpile.mjs). Then the component's load: compiled on a
# fresh data folder, and from the compile cache on a restart.
#
#   bench/transpile.sh            # 2 rounds
#   ROUNDS=1 bench/transpile.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"
ROUNDS="${ROUNDS:-2}"
out=bench/out
mkdir -p "$out"
source bench/lib.sh

set_up_and_build

work=$(mktemp -d)
pids=()
trap cleanup EXIT
mkdir -p "$work/plugins"
cp plugins/transpile.toml plugins/transpile.wasm "$work/plugins/"
# Every load comes from one address here: the per-client caps a public
# server needs (rate_limit, max_concurrent_per_client) are off.
sed -i -e '/^rate_limit = /d' -e '/^max_concurrent_per_client = /d' "$work/plugins/transpile.toml"

start_spike() {
  "$spike" serve --listen 127.0.0.1:8794 --plugins "$work/plugins" --data "$work/data" --no-watch \
    >"$out/transpile-spike.log" 2>&1 &
  spike_pid=$!
  pids+=("$spike_pid")
  wait_port 8794
  for _ in $(seq 1 600); do grep -q "plugin active" "$out/transpile-spike.log" && break; sleep 0.1; done
}
load_ms() { grep "plugin active" "$out/transpile-spike.log" | sed -E 's/.*cache=([A-Za-z]+) load_ms=([0-9.]+).*/\1 \2/'; }

# The component's load: compiled, then from the cache.
start_spike
echo "load, fresh data folder: $(load_ms) ms"
stop "$spike_pid"
start_spike
echo "load, restarted:         $(load_ms) ms"

# The corpus as files for the native run.
node -e "
import('./tests/node/corpus.mjs').then(({ corpus }) => {
  const fs = require('fs'); const list = [];
  corpus().forEach((f, i) => { const name = i + '.' + f.loader; fs.writeFileSync('$work/' + name, f.code); list.push(f.loader + ' ' + name); });
  fs.writeFileSync('$work/list.txt', list.join('\n') + '\n');
})"
cargo test --quiet --release -p transpile --lib --no-run 2>/dev/null

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round"
  node bench/transpile.mjs http://127.0.0.1:8794
  CORPUS="$work" cargo test --quiet --release -p transpile --lib native_corpus_benchmark -- --ignored --nocapture 2>/dev/null | grep '^{'
done
