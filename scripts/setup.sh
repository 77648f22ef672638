#!/usr/bin/env bash
# Installs what building and testing spike needs on a fresh machine of this
# kind (Debian 12 with rustup): the wasm32-wasip2 target, rustfmt and clippy,
# and the test tools below.
# Idempotent and quick when everything is there.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is not installed; install Rust with rustup first" >&2
  exit 1
fi
installed_targets=$(rustup target list --installed)
if ! grep -qx wasm32-wasip2 <<<"$installed_targets"; then
  echo "setup: adding the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi
installed_components=$(rustup component list --installed)
for component in rustfmt clippy; do
  if ! grep -q "^$component" <<<"$installed_components"; then
    echo "setup: adding $component"
    rustup component add "$component"
  fi
done

# The auth tests' outside tools, cached outside the clone:
# - PyJWT in a venv (tests/tools/requirements.txt), to mint tokens with a
#   JWT library of another ecosystem;
# - coturn (turnserver, turnutils_uclient), a real TURN server for the TURN
#   credential test.
tools="${SPIKE_TOOLS_DIR:-$HOME/.cache/spike-tools}"
venv="$tools/venv"
requirements=tests/tools/requirements.txt
if ! cmp -s "$requirements" "$venv/requirements.txt" 2>/dev/null; then
  echo "setup: Python venv for the test tools in $venv"
  if ! python3 -c 'import ensurepip' 2>/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
  python3 -m venv --clear "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$venv/requirements.txt"
fi
if ! command -v turnserver >/dev/null 2>&1 || ! command -v turnutils_uclient >/dev/null 2>&1; then
  echo "setup: installing coturn"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq coturn >/dev/null
fi

# The renderer's browser (Debian's Chromium at /usr/bin/chromium, which
# `spike serve` drives) and poppler's pdfinfo / pdftotext, with which the
# renderer's tests read the PDFs it makes.
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v pdftotext >/dev/null 2>&1 || missing+=(poppler-utils)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The npm clients the end-to-end tests drive (tests/node/package.json,
# pinned by its package-lock.json; npm's cache is outside the clone),
# installed again when the lock file changes.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "setup: installing Node.js and npm"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
node_clients=tests/node
if ! cmp -s "$node_clients/package-lock.json" "$node_clients/node_modules/.spike-installed" 2>/dev/null; then
  echo "setup: npm clients for the tests in $node_clients"
  # `npm install` from the lock, not `npm ci`: the LiveStore client's
  # peers have optional packages for other platforms that the registry
  # here does not serve (404), which npm leaves out of the lock and
  # `npm ci` then refuses; `npm install` installs the locked versions and
  # skips what this platform does not need.
  (cd "$node_clients" && npm install --no-audit --no-fund --silent)
  cp "$node_clients/package-lock.json" "$node_clients/node_modules/.spike-installed"
fi
