#!/usr/bin/env bash
# The hello benchmark of this tree against an earlier revision, side by side
# in one run: both release builds serve the same plain wasi:http component,
# alternating rounds of wrk, and the server's CPU time per request is read
# from /proc (steadier than requests/s on a shared machine).
#
#   bench/compare_builds.sh f005d67            # 8 pairs of rounds of 4 s each
#   ROUNDS=12 DURATION=3 bench/compare_builds.sh HEAD~3
#   KV_READ=1 bench/compare_builds.sh HEAD~1    # the hello plugin's KV read
#                                               # (GET /hello/counter) instead
#
# This machine's speed drifts by a third over tens of seconds (other
# tenants), so rounds are short and alternate, and the verdict is the median
# of each pair's ratio (base round, then head round), not a ratio of means.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"
rev="${1:?usage: bench/compare_builds.sh <git revision>}"
ROUNDS="${ROUNDS:-8}"
DURATION="${DURATION:-4}"
out=bench/out
mkdir -p "$out"

scripts/setup.sh
# wrk alone of the benchmarks' peers (bench/setup.sh installs them all).
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
scripts/build-guests.sh >/dev/null
work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  git worktree remove --force "$work/tree" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# This tree's build first, then the other revision's in a worktree sharing
# the target directory (only the spike crate compiles again). Both builds
# write the same `libspike` artifact, and cargo cannot tell whose it holds:
# this tree's sources are touched before its build and after the other's,
# so that each build of this tree compiles them instead of linking the
# other revision's library.
find host/src -name '*.rs' -exec touch {} +
cargo build --quiet --release -p spike
cp "$CARGO_TARGET_DIR/release/spike" "$work/spike-head"
git worktree add --quiet --detach "$work/tree" "$rev"
(cd "$work/tree" && cargo build --quiet --release -p spike)
cp "$CARGO_TARGET_DIR/release/spike" "$work/spike-base"
find host/src -name '*.rs' -exec touch {} +
if cmp -s "$work/spike-head" "$work/spike-base"; then
  echo "the two builds are the same binary: nothing to compare" >&2
  exit 1
fi

mkdir -p "$work/plugins"
if [ -n "${KV_READ:-}" ]; then
  cp "$CARGO_TARGET_DIR/wasm32-wasip2/guest/hello.wasm" "$work/plugins/hello.wasm"
  printf 'component = "hello.wasm"\n[[routes]]\nprefix = "/hello"\n[grants]\nkv = ["hello"]\n' >"$work/plugins/hello.toml"
  path=/hello/counter
else
  cp "$CARGO_TARGET_DIR/wasm32-wasip2/guest/fixture_plain_hello.wasm" "$work/plugins/plain.wasm"
  printf 'component = "plain.wasm"\n[[routes]]\nprefix = "/"\n' >"$work/plugins/plain.toml"
  path=/
fi

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() { # name binary round
  rm -rf "$work/data"
  "$2" serve --listen 127.0.0.1:8791 --plugins "$work/plugins" --data "$work/data" --no-watch >"$out/compare-$1.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:8791$path" >/dev/null 2>&1 && break; sleep 0.05; done
  local before after
  before=$(ticks "$pid")
  wrk -t2 -c32 -d"${DURATION}s" --latency "http://127.0.0.1:8791$path" >"$out/compare-$1-$3.txt"
  after=$(ticks "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  awk -v name="$1" -v round="$3" -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" '
    /requests in/ {n = $1} /^Requests\/sec:/ {r = $2} $1 == "99%" {p = $2}
    END {printf "%-6s round %s  %10s req/s  p99 %-8s  %.1f us CPU/request\n", name, round, r, p, t / hz * 1e6 / n
         printf "%s %s %s\n", name, r, t / hz * 1e6 / n >> "'"$out"'/compare.txt"}' "$out/compare-$1-$3.txt"
}

: >"$out/compare.txt"
echo "GET $path: base $rev ($(git rev-parse --short "$rev")) vs head ($(git rev-parse --short HEAD), with the working tree), wrk -t2 -c32 -d${DURATION}s, $(nproc) cores"
for round in $(seq 1 "$ROUNDS"); do
  run base "$work/spike-base" "$round"
  run head "$work/spike-head" "$round"
done
awk '{rps[$1] += $2; cpu[$1] += $3; n[$1]++}
  END {printf "mean: base %.0f req/s, %.1f us/request; head %.0f req/s, %.1f us/request\n", rps["base"]/n["base"], cpu["base"]/n["base"], rps["head"]/n["head"], cpu["head"]/n["head"]}' "$out/compare.txt"
# Pairs: line 2k-1 is base, 2k is head.
paste - - <"$out/compare.txt" | awk '{print $5 / $2, $6 / $3}' >"$out/compare-pairs.txt"
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
printf 'head / base, median of %s pairs: %.3fx requests/s, %.3fx CPU per request\n' "$ROUNDS" \
  "$(cut -d' ' -f1 "$out/compare-pairs.txt" | median)" "$(cut -d' ' -f2 "$out/compare-pairs.txt" | median)"
