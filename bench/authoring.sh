#!/usr/bin/env bash
# Time from `spike new` to a first served request, per language, the way a
# third party meets it: `spike new`, `spike build`, `spike serve` on the
# project's plugin folder, until `GET /<name>` answers 200.
#
#   rust cold   an empty Cargo target directory: wit-bindgen and the SDK
#               compile (crates.io's downloads are in ~/.cargo already)
#   rust warm   the same target directory again, a new project
#   js          a new project: npm install of componentize-js (from npm's
#               cache in ~/.npm once it has been fetched), componentize-js
#   python      a new project: a venv with componentize-py (pip's cache
#               once fetched), componentize-py
#
#   bench/authoring.sh            # 2 runs of each
#   RUNS=1 LANGS="js python" bench/authoring.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"
RUNS="${RUNS:-2}"
LANGS="${LANGS:-rust js python}"
PORT=8799
source bench/lib.sh

cargo build --quiet --release -p spike
spike="$CARGO_TARGET_DIR/release/spike"
work=$(mktemp -d)
pids=()
trap cleanup EXIT

now() { date +%s.%N; }

# One project from nothing to a 200; prints the seconds of each phase.
first_request() { # target-dir project [lang]
  local target=$1 name=$2 lang=${3:-rust} t0 t1 t2 t3 pid
  cd "$work"
  t0=$(now)
  "$spike" new "$name" --lang "$lang" >/dev/null
  t1=$(now)
  CARGO_TARGET_DIR="$target" "$spike" build --dir "$name" >/dev/null 2>&1
  t2=$(now)
  "$spike" serve --listen "127.0.0.1:$PORT" --plugins "$name/plugin" --data "$name/data" \
    --no-watch >"$work/$name.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 3000); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/$name")" = 200 ] && break
    sleep 0.02
  done
  t3=$(now)
  stop "$pid"
  cd - >/dev/null
  awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" \
    'BEGIN {printf "new %.2f s  build %.2f s  serve to first 200 %.2f s  total %.2f s\n", b - a, c - b, d - c, d - a}'
}

echo "$(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)"
if [[ " $LANGS " == *" rust "* ]]; then
  for run in $(seq 1 "$RUNS"); do
    echo "rust cold run $run: $(first_request "$work/target-cold-$run" "cold$run")"
  done
  warm="$work/target-warm"
  first_request "$warm" warmup >/dev/null
  for run in $(seq 1 "$RUNS"); do
    echo "rust warm run $run: $(first_request "$warm" "warm$run")"
  done
fi
for lang in js python; do
  [[ " $LANGS " == *" $lang "* ]] || continue
  for run in $(seq 1 "$RUNS"); do
    echo "$lang run $run: $(first_request "$work/unused" "$lang$run" "$lang")"
  done
done
