#!/usr/bin/env bash
# HTTPS, side by side in one run: spike's hello over plain HTTP (the cost
# of TLS is the difference), over HTTPS with HTTP/1.1 (wrk) and HTTP/2
# (h2load), and new TLS handshakes per second (wrk, one request per
# connection); Debian's nginx with TLS serving a static file of the same
# bytes on the same certificate is the anchor. One ECDSA P-256
# certificate, TLS 1.3, loopback.
#
#   bench/tls.sh                      # 2 rounds of 10 s per case
#   ROUNDS=1 DURATION=5s bench/tls.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-32}"
out="$PWD/bench/out/tls"
mkdir -p "$out"
source bench/lib.sh
set_up_and_build
nginx=$(command -v nginx || echo /usr/sbin/nginx)

work=$(mktemp -d)
pids=()
trap cleanup EXIT
mkdir -p "$work/plugins" "$work/site"
cp plugins/hello.toml plugins/hello.wasm "$work/plugins/"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
# The same bytes hello answers, as nginx's file.
printf 'Hello, world! This is spike.\n' >"$work/site/hello"
chmod -R a+rX "$work"

cat >"$work/nginx.conf" <<CONF
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000;
  server {
    # (nginx 1.22, Debian 12's: http2 is a flag of listen.)
    listen 127.0.0.1:8795 ssl http2;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    root $work/site;
    location = /hello { default_type text/plain; }
  }
}
CONF
"$nginx" -c "$work/nginx.conf" -g 'daemon off;' >"$out/nginx.log" 2>&1 &
pids+=($!)
"$spike" serve --listen 127.0.0.1:8796 --plugins "$work/plugins" --data "$work/data-plain" --no-watch \
  >"$out/spike-plain.log" 2>&1 &
pids+=($!)
"$spike" serve --listen 127.0.0.1:8797 --plugins "$work/plugins" --data "$work/data-tls" --no-watch \
  --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" >"$out/spike-tls.log" 2>&1 &
pids+=($!)
for port in 8795 8796 8797; do wait_port "$port"; done
ca=(--cacert "$work/cert.pem" --resolve "localhost:8795:127.0.0.1" --resolve "localhost:8797:127.0.0.1")
for _ in $(seq 1 100); do curl -fs http://127.0.0.1:8796/readyz >/dev/null && break; sleep 0.2; done
for _ in $(seq 1 100); do curl -fs "${ca[@]}" https://localhost:8797/readyz >/dev/null && break; sleep 0.2; done
# The same answer from all three, and HTTP/2 by ALPN from both over TLS.
want=$(cat "$work/site/hello")
for url in http://127.0.0.1:8796/hello https://localhost:8797/hello https://localhost:8795/hello; do
  [ "$(curl -fs "${ca[@]}" "$url")" = "$want" ] || { echo "$url does not answer hello" >&2; exit 1; }
done
for port in 8795 8797; do
  [ "$(curl -fs "${ca[@]}" --http2 -o /dev/null -w '%{http_version}' "https://localhost:$port/hello")" = 2 ] ||
    { echo "$port does not speak HTTP/2" >&2; exit 1; }
done

wrk_run() { # name round wrk-args...
  local name=$1 round=$2 file="$out/$1-$2.txt"
  shift 2
  wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$@" >"$file"
  local rps errors
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$file")
  errors=$(awk '/Non-2xx|Socket errors/ {print}' "$file" | tr '\n' ' ')
  printf '%-20s round %s %10s req/s  p50 %s  %s\n' "$name" "$round" "$rps" "$(awk '$1 == "50%" {print $2}' "$file")" "$errors"
  echo "$name $rps" >>"$out/results.txt"
}
h2_run() { # name round url
  local file="$out/$1-$2.txt"
  h2load -c"$CONNECTIONS" -m10 -t2 -D"${DURATION%s}" "$3" >"$file" 2>&1
  local rps failed
  rps=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' "$file")
  failed=$(awk '/^requests:/ {print $8, $9}' "$file")
  printf '%-20s round %s %10s req/s  (%s)\n' "$1" "$2" "$rps" "$failed"
  echo "$1 $rps" >>"$out/results.txt"
}

: >"$out/results.txt"
echo "wrk -t2 -c$CONNECTIONS / h2load -c$CONNECTIONS -m10, $DURATION, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
close=(-H 'Connection: close')
for round in $(seq 1 "$ROUNDS"); do
  wrk_run spike-http "$round" http://127.0.0.1:8796/hello
  wrk_run spike-https-h1 "$round" https://localhost:8797/hello
  wrk_run nginx-https-h1 "$round" https://localhost:8795/hello
  h2_run spike-https-h2 "$round" https://localhost:8797/hello
  h2_run nginx-https-h2 "$round" https://localhost:8795/hello
  wrk_run spike-handshakes "$round" "${close[@]}" https://localhost:8797/hello
  wrk_run nginx-handshakes "$round" "${close[@]}" https://localhost:8795/hello
done

mean() { awk -v n="$1" '$1 == n {s += $2; c++} END {printf "%.0f", s / c}' "$out/results.txt"; }
echo
echo "mean over $ROUNDS rounds (req/s):"
for n in spike-http spike-https-h1 nginx-https-h1 spike-https-h2 nginx-https-h2 spike-handshakes nginx-handshakes; do
  printf '  %-18s %10s\n' "$n" "$(mean $n)"
done
awk -v plain="$(mean spike-http)" -v h1="$(mean spike-https-h1)" -v h2="$(mean spike-https-h2)" \
  -v nh1="$(mean nginx-https-h1)" -v nh2="$(mean nginx-https-h2)" \
  -v hs="$(mean spike-handshakes)" -v nhs="$(mean nginx-handshakes)" 'BEGIN {
  printf "kept-alive HTTPS / plain HTTP: %.2fx HTTP/1.1, %.2fx HTTP/2 (target >= 0.9)\n", h1 / plain, h2 / plain
  printf "spike / nginx over HTTPS: %.2fx HTTP/1.1, %.2fx HTTP/2\n", h1 / nh1, h2 / nh2
  printf "handshakes/s spike / nginx: %.2fx (target >= 1)\n", hs / nhs
}'
