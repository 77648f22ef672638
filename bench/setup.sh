#!/usr/bin/env bash
# Installs the peers the benchmarks compare against, each from its own
# registry: wrk, nginx and h2load (Debian), wasmtime-cli 48 (crates.io), workerd and
# componentize-js (npm), LiteLLM's proxy and componentize-py (PyPI).
# Tools go under $SPIKE_TOOLS_DIR (default ~/.cache/spike-tools) and bench/node_modules.
set -euo pipefail
cd "$(dirname "$0")"
tools="${SPIKE_TOOLS_DIR:-$HOME/.cache/spike-tools}"

if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk
fi
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  apt-get update -qq && apt-get install -y -qq nginx
fi
# h2load (HTTP/2 load, bench/tls.sh) is nghttp2's.
if ! command -v h2load >/dev/null; then
  apt-get update -qq && apt-get install -y -qq nghttp2-client
fi
if ! "$tools/wasmtime-48/bin/wasmtime" --version 2>/dev/null | grep -q '^wasmtime 48\.'; then
  echo "bench setup: installing wasmtime-cli 48 (10 to 20 minutes)"
  cargo install --locked wasmtime-cli --version 48.0.8 --root "$tools/wasmtime-48"
fi
# npm peers (workerd, the Yjs server and client), installed again when
# the lock file changes.
if ! cmp -s package-lock.json node_modules/.spike-installed 2>/dev/null; then
  npm install --no-audit --no-fund --silent
  cp package-lock.json node_modules/.spike-installed
fi
# LiteLLM's proxy, the peer of bench/ai.sh, in a venv of its own (its
# dependencies pin versions the tests' venv must not get). 1.106.0: the
# newest 1.106 whose dependencies the index here serves.
if ! "$tools/litellm/bin/litellm" --version >/dev/null 2>&1; then
  echo "bench setup: installing litellm[proxy] 1.106.0"
  python3 -m venv "$tools/litellm"
  "$tools/litellm/bin/pip" install --quiet --disable-pip-version-check 'litellm[proxy]==1.106.0'
fi
# componentize-py, which builds the Python hello of bench/http_hello.sh.
if ! "$tools/componentize-py/bin/componentize-py" --version 2>/dev/null | grep -q '0\.25\.1'; then
  echo "bench setup: installing componentize-py 0.25.1"
  python3 -m venv "$tools/componentize-py"
  "$tools/componentize-py/bin/pip" install --quiet --disable-pip-version-check 'componentize-py==0.25.1'
fi
