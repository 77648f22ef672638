#!/usr/bin/env bash
# Installs what spike needs on a fresh machine of this kind (Debian 12 with
# rustup). Idempotent and quick when everything is there.
#
#   scripts/setup.sh serve   what serving needs: the wasm32-wasip2 target,
#                            Chromium (the renderer's browser), Node.js and
#                            npm (the editor site's build)
#   scripts/setup.sh         all that, and what the tests need: rustfmt and
#                            clippy, PyJWT and nats-server in a venv,
#                            coturn, poppler-utils, prometheus (promtool),
#                            pebble, libnss3-tools, curl, the npm test
#                            clients, the npm plugin's test packages and
#                            a Verdaccio registry holding them
#
# Debian packages come from apt-get: as root directly, else through sudo
# if there is one, else it stops with the command to run.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-test}"
case "$mode" in
  serve | test) ;;
  *)
    echo "usage: scripts/setup.sh [serve|test]" >&2
    exit 2
    ;;
esac

# Installs Debian packages, updating the package lists once a run.
apt_updated=
apt_install() {
  local apt=(apt-get)
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      apt=(sudo apt-get)
    else
      echo "setup: $* must be installed, and this user is not root (and there is no sudo); run as root:" >&2
      echo "  apt-get update && apt-get install -y $*" >&2
      exit 1
    fi
  fi
  echo "setup: installing $* (${apt[*]})"
  if [ -z "$apt_updated" ]; then
    "${apt[@]}" update -qq
    apt_updated=1
  fi
  "${apt[@]}" install -y -qq "$@" >/dev/null </dev/null
}
export DEBIAN_FRONTEND=noninteractive

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is not installed; install Rust with rustup first" >&2
  exit 1
fi
installed_targets=$(rustup target list --installed)
if ! grep -qx wasm32-wasip2 <<<"$installed_targets"; then
  echo "setup: adding the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi

# Debian's packages: Chromium at /usr/bin/chromium (which `spike serve`
# drives), Node.js and npm (the editor site's build, the test clients),
# and for the tests coturn (a real TURN server), poppler's pdfinfo /
# pdftotext (the renderer's tests read its PDFs) and venv.
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "$mode" = test ]; then
  { command -v turnserver && command -v turnutils_uclient; } >/dev/null 2>&1 || missing+=(coturn)
  command -v pdftotext >/dev/null 2>&1 || missing+=(poppler-utils)
  python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
  # promtool checks the alert rules in docs/monitoring (and the metrics
  # spike serves); Debian's prometheus package has it.
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  # HTTPS: pebble (a test ACME server) and pebble-challtestsrv, certutil
  # (the test CA in Chromium's NSS database), curl (HTTP/2 by ALPN).
  { command -v pebble && command -v pebble-challtestsrv; } >/dev/null 2>&1 || missing+=(pebble)
  command -v certutil >/dev/null 2>&1 || missing+=(libnss3-tools)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
fi
if [ ${#missing[@]} -gt 0 ]; then
  apt_install "${missing[@]}"
fi
[ "$mode" = serve ] && exit 0

installed_components=$(rustup component list --installed)
for component in rustfmt clippy; do
  if ! grep -q "^$component" <<<"$installed_components"; then
    echo "setup: adding $component"
    rustup component add "$component"
  fi
done

# PyPI's test tools in a venv, cached outside the clone
# (tests/tools/requirements.txt): PyJWT, to mint tokens with a JWT library
# of another ecosystem, and nats-server for the cluster tests.
tools="${SPIKE_TOOLS_DIR:-$HOME/.cache/spike-tools}"
venv="$tools/venv"
requirements=tests/tools/requirements.txt
if ! cmp -s "$requirements" "$venv/requirements.txt" 2>/dev/null; then
  echo "setup: Python venv for the test tools in $venv"
  python3 -m venv --clear "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$venv/requirements.txt"
fi

# The npm clients the end-to-end tests drive (tests/node/package.json,
# pinned by its package-lock.json; npm's cache is outside the clone),
# installed again when the lock file changes.
node_clients=tests/node
if ! cmp -s "$node_clients/package-lock.json" "$node_clients/node_modules/.spike-installed" 2>/dev/null; then
  echo "setup: npm clients for the tests in $node_clients"
  # `npm install` from the lock, not `npm ci`: the LiveStore client's
  # peers have optional packages for other platforms that the registry
  # here does not serve (404), which npm leaves out of the lock and
  # `npm ci` then refuses; `npm install` installs the locked versions and
  # skips what this platform does not need. `--no-save` leaves the
  # tracked lock as it is (npm would add this platform's optional
  # entries to it, and a fresh clone would be dirty).
  (cd "$node_clients" && npm install --no-audit --no-fund --silent --no-save)
  cp "$node_clients/package-lock.json" "$node_clients/node_modules/.spike-installed"
fi

# The npm plugin's test packages (tests/npm/package.json, pinned by its
# lock): installed for Node to load (what the modules spike builds are
# compared with), and published, every package of the lock, into a
# Verdaccio registry kept in the tools folder (tests/node/npm-registry.mjs;
# the tarballs come from the public registry once), filled again when the
# lock changes.
npm_packages=tests/npm
if ! cmp -s "$npm_packages/package-lock.json" "$npm_packages/node_modules/.spike-installed" 2>/dev/null; then
  echo "setup: npm test packages in $npm_packages"
  (cd "$npm_packages" && npm install --no-audit --no-fund --silent --no-save)
  cp "$npm_packages/package-lock.json" "$npm_packages/node_modules/.spike-installed"
fi
npm_registry="$tools/npm-registry"
if ! cmp -s "$npm_packages/package-lock.json" "$npm_registry/filled-from.json" 2>/dev/null; then
  echo "setup: a Verdaccio registry of the npm test packages in $npm_registry"
  rm -rf "$npm_registry/storage" "$npm_registry/htpasswd"
  node tests/node/npm-registry.mjs fill "$npm_registry"
  cp "$npm_packages/package-lock.json" "$npm_registry/filled-from.json"
fi
