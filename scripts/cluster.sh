#!/usr/bin/env bash
# A spike cluster on this machine, for trying it and for benchmarks: one
# NATS server with JetStream and N spike nodes (3 by default) on loopback,
# all serving the shipped plugins/ and the editor site, sharing their data
# through JetStream. Ctrl-C stops them all.
#
#   scripts/cluster.sh [--nodes N] [--release|--debug] [flags for spike serve...]
#
# Node i listens on 127.0.0.1:$((SPIKE_CLUSTER_PORT + i - 1)) (8787, 8788,
# 8789 by default), NATS on 127.0.0.1:${SPIKE_NATS_PORT:-4222}; everything
# lives under ${SPIKE_CLUSTER_DIR:-data/cluster}: jetstream/ (the shared
# data), node-i/ (each node's caches and uploads in progress) and the logs.
# The admin token of every node is $SPIKE_ADMIN_TOKEN (default "cluster").
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"

nodes=3
profile=release
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes="$2"; shift 2 ;;
    --release) profile=release; shift ;;
    --debug) profile=debug; shift ;;
    *) break ;;
  esac
done
base_port="${SPIKE_CLUSTER_PORT:-8787}"
nats_port="${SPIKE_NATS_PORT:-4222}"
dir="${SPIKE_CLUSTER_DIR:-data/cluster}"
token="${SPIKE_ADMIN_TOKEN:-cluster}"

if [ -z "${SPIKE_CLUSTER_SKIP_BUILD:-}" ]; then
  scripts/setup.sh
  scripts/build-guests.sh
  scripts/build-site.sh
  if [ "$profile" = release ]; then cargo build --release -p spike; else cargo build -p spike; fi
fi
spike="$CARGO_TARGET_DIR/$profile/spike"
nats_server="${SPIKE_NATS_SERVER:-${SPIKE_TOOLS_DIR:-$HOME/.cache/spike-tools}/venv/bin/nats-server}"

mkdir -p "$dir"
# Every write JetStream acknowledges is on disk first (sync_interval:
# always), as with the embedded database: nothing acknowledged is lost if
# the machine loses power.
cat > "$dir/nats.conf" <<EOF
listen: 127.0.0.1:$nats_port
jetstream {
  store_dir: "$dir/jetstream"
  sync_interval: always
}
EOF

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

"$nats_server" -c "$dir/nats.conf" >"$dir/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break
  sleep 0.1
done

for i in $(seq "$nodes"); do
  port=$((base_port + i - 1))
  SPIKE_ADMIN_TOKEN="$token" "$spike" serve \
    --listen "127.0.0.1:$port" \
    --node "node-$i" \
    --storage "nats://127.0.0.1:$nats_port" \
    --data "$dir/node-$i" \
    --site /=site/dist \
    "$@" >"$dir/node-$i.log" 2>&1 &
  pids+=($!)
  echo "node-$i: http://127.0.0.1:$port (log: $dir/node-$i.log)"
done
echo "nats: nats://127.0.0.1:$nats_port (log: $dir/nats.log); admin token: $token"
echo "Ctrl-C stops the cluster."
wait -n "${pids[@]}" || true
echo "a process of the cluster exited; stopping the others" >&2
