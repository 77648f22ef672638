#!/usr/bin/env bash
# Static files, side by side in one run: spike (--site) vs nginx (Debian's)
# serving the same folder with the same headers: a 2 KB and a 200 KB file
# whose names carry a content hash (`Cache-Control: public,
# max-age=31536000, immutable` from both), requested as-is (no
# Accept-Encoding, so both send the file's bytes). Both log each request to
# a file.
#
#   bench/assets.sh                   # 2 rounds of 10 s per server and file
#   ROUNDS=1 DURATION=5s bench/assets.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-32}"
out="$PWD/bench/out/assets"
mkdir -p "$out"
source bench/lib.sh

bench/setup.sh
cargo build --quiet --release -p spike
spike="$CARGO_TARGET_DIR/release/spike"
nginx=$(command -v nginx || echo /usr/sbin/nginx)

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

site="$work/site"
mkdir -p "$site/assets" "$work/plugins"
head -c 1500 /dev/urandom | base64 -w0 | head -c 2048 >"$site/assets/small.1a2b3c4d5e.js"
head -c 150000 /dev/urandom | base64 -w0 | head -c 204800 >"$site/assets/large.5e4d3c2b1a.js"
echo '<!doctype html><title>bench</title>' >"$site/index.html"
# nginx's workers run as www-data.
chmod -R a+rX "$work"

cat >"$work/nginx.conf" <<EOF
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
  include /etc/nginx/mime.types;
  access_log $out/nginx-access.log;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:8792;
    root $site;
    etag on;
    location ~ "\.[0-9a-f]{10}\.js$" {
      add_header Cache-Control "public, max-age=31536000, immutable";
    }
    location / {
      add_header Cache-Control "no-cache";
      try_files \$uri /index.html;
    }
  }
}
EOF
"$nginx" -c "$work/nginx.conf" -g 'daemon off;' >"$out/nginx.log" 2>&1 &
pids+=($!)
"$spike" serve --listen 127.0.0.1:8793 --plugins "$work/plugins" --data "$work/data" --no-watch \
  --site "/=$site" >"$out/spike.log" 2>&1 &
pids+=($!)
for port in 8792 8793; do
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.1; done
done
# Same bytes and the same caching headers from both.
for f in assets/small.1a2b3c4d5e.js assets/large.5e4d3c2b1a.js; do
  for port in 8792 8793; do
    cmp -s <(curl -fs "http://127.0.0.1:$port/$f") "$site/$f" || { echo "$port/$f differs" >&2; exit 1; }
    curl -fsI "http://127.0.0.1:$port/$f" | grep -qi '^cache-control: public, max-age=31536000, immutable' ||
      { echo "$port/$f lacks the immutable header" >&2; exit 1; }
  done
done

run() { # name url round
  local file="$out/wrk-$1-$3.txt"
  wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$2" >"$file"
  local rps p50 p99 errors
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$file")
  p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$file")")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$file")")
  errors=$(awk '/Non-2xx|Socket errors/ {print}' "$file" | tr '\n' ' ')
  printf '%-12s round %s  %10s req/s  p50 %6.2f ms  p99 %6.2f ms  %s\n' "$1" "$3" "$rps" "$p50" "$p99" "$errors"
  echo "$1 $rps $p50 $p99" >>"$out/results.txt"
}

: >"$out/results.txt"
echo "wrk -t2 -c$CONNECTIONS -d$DURATION, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
for round in $(seq 1 "$ROUNDS"); do
  run nginx-2k http://127.0.0.1:8792/assets/small.1a2b3c4d5e.js "$round"
  run spike-2k http://127.0.0.1:8793/assets/small.1a2b3c4d5e.js "$round"
  run nginx-200k http://127.0.0.1:8792/assets/large.5e4d3c2b1a.js "$round"
  run spike-200k http://127.0.0.1:8793/assets/large.5e4d3c2b1a.js "$round"
done

mean() { awk -v n="$1" -v col="$2" '$1 == n {s += $col; c++} END {printf "%.1f", s / c}' "$out/results.txt"; }
echo
echo "mean over $ROUNDS rounds:"
for n in nginx-2k spike-2k nginx-200k spike-200k; do
  printf '  %-11s %10s req/s  p50 %6s ms  p99 %6s ms\n' "$n" "$(mean $n 2)" "$(mean $n 3)" "$(mean $n 4)"
done
awk -v a="$(mean spike-2k 2)" -v b="$(mean nginx-2k 2)" -v c="$(mean spike-200k 2)" -v d="$(mean nginx-200k 2)" 'BEGIN {
  printf "spike / nginx: %.2fx at 2 KB, %.2fx at 200 KB (target >= 0.7)\n", a / b, c / d
}'
