# What the benchmarks share (sourced from the repository's root by the
# scripts in bench/): setting up and building, cleaning up, waiting for a
# server, stopping one, reading wrk's latencies and roomload's JSON lines, a
# process's RSS, the median of a list.

# Installs the peers and the test tools, builds the guests and the release
# host (and any other packages given, as `-p roomload`), and sets $spike:
# that build, or `$SPIKE` if set (another revision's binary, to compare).
set_up_and_build() {
  bench/setup.sh
  scripts/setup.sh
  scripts/build-guests.sh >/dev/null
  cargo build --quiet --release -p spike "$@"
  spike="${SPIKE:-$CARGO_TARGET_DIR/release/spike}"
}

# Kills the servers in `pids` and removes `$work` (the scripts set both,
# then `trap cleanup EXIT`).
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }

# Waits until something listens on 127.0.0.1:$1.
wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  exit 1
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# The number `"$2":` holds in the JSON line $1.
field() { sed -E "s/.*\"$2\":([0-9.]+).*/\1/" <<<"$1"; }

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# RSS of process $1 before and after a load: runs "${@:5}" in the
# background (its output into $4), waits until that output has $2 and
# then $3 seconds more. Sets rss_before and rss_after (KiB), and loader
# (the load's pid, to wait for).
rss_around() {
  local pid=$1 marker=$2 settle=$3 out=$4
  shift 4
  rss_before=$(rss_kib "$pid")
  "$@" >"$out" &
  loader=$!
  for _ in $(seq 1 600); do grep -q "$marker" "$out" && break; sleep 0.2; done
  sleep "$settle"
  rss_after=$(rss_kib "$pid")
}

# The median of the space-separated numbers in $1.
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{a[NR]=$1} END {printf "%.10g\n", (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# A latency wrk printed, in ms, whatever unit it printed it in.
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 }
    else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000 }
    else print v }'
}

# One wrk run (-t2, $CONNECTIONS connections, $DURATION) against URL $2,
# its output kept in $3, with the CPU time server $1 spent meanwhile (user +
# system ticks from /proc); any further arguments are wrk's (`-s post.lua`).
# Prints: requests/s, p50 ms, p99 ms, server CPU µs per request, and wrk's
# error lines if any.
wrk_cpu() {
  local pid=$1 at=$2 file=$3 before after
  shift 3
  before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  wrk -t2 -c"${CONNECTIONS:-32}" -d"${DURATION:-8s}" --latency "$@" "$at" >"$file"
  after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /requests in/ {n = $1} /^Requests\/sec:/ {r = $2} $1 == "50%" {p50 = ms($2)} $1 == "99%" {p99 = ms($2)}
    /Non-2xx|Socket errors/ {errors = errors " " $0}
    END { printf "%s %s %s %.2f%s\n", r, p50, p99, t / hz * 1e6 / n, errors }' "$file"
}
