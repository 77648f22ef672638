# What the room benchmarks share (sourced by bench/rooms.sh and
# bench/yjs.sh): waiting for a server, stopping one, reading a field of
# roomload's JSON line, a process's RSS, the median of a list.

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

# The median of the space-separated numbers in $1.
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{a[NR]=$1} END {printf "%.10g\n", (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
