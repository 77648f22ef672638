#!/usr/bin/env bash
# Builds the JavaScript and Python hellos of bench/http_hello.sh as
# components, with the tools bench/setup.sh installs: componentize-js (npm)
# and componentize-py (PyPI). Both serve what fixture_plain_hello serves.
#
#   bench/guests/build.sh     # -> $CARGO_TARGET_DIR/bench-guests/{js,py}_hello.wasm
#
# Built again only when a source or the WIT changes.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"
tools="${SPIKE_TOOLS_DIR:-$HOME/.cache/spike-tools}"
out="$CARGO_TARGET_DIR/bench-guests"
mkdir -p "$out"

# A world of just wasi:http/proxy, from the project's own WIT copies.
world() { # dir version
  rm -rf "$1" && mkdir -p "$1/deps"
  cp wit/deps/*.wit "$1/deps/"
  printf 'package bench:hello;\n\nworld hello {\n  include wasi:http/proxy@%s;\n}\n' "$2" >"$1/world.wit"
}

stamp() { cat "$@" wit/deps/*.wit | sha256sum | cut -c1-16; }

js_stamp=$(stamp bench/guests/hello.js "$0")
if [ "$(cat "$out/js_hello.stamp" 2>/dev/null)" != "$js_stamp" ]; then
  echo "bench: building the JavaScript hello (componentize-js)"
  # StarlingMonkey in componentize-js 0.23 exports wasi:http 0.2.10: its
  # world is ours at that version (wasmtime serves any 0.2.x), with the
  # items gated on later versions ungated.
  world "$out/js-wit" 0.2.10
  sed -i -E 's/@0\.2\.1[12]/@0.2.10/g; s/@since\(version = 0\.2\.1[12]\)/@since(version = 0.2.10)/g' \
    "$out"/js-wit/deps/*.wit "$out/js-wit/world.wit"
  # (bench/package.json names @bytecodealliance/preview2-shim itself: componentize-js
  # imports it at run time but lists it only among its dev dependencies.)
  bench/node_modules/.bin/componentize-js bench/guests/hello.js \
    --wit "$out/js-wit" --world-name hello -o "$out/js_hello.wasm"
  echo "$js_stamp" >"$out/js_hello.stamp"
fi

py_stamp=$(stamp bench/guests/hello.py "$0")
if [ "$(cat "$out/py_hello.stamp" 2>/dev/null)" != "$py_stamp" ]; then
  echo "bench: building the Python hello (componentize-py)"
  world "$out/py-wit" 0.2.12
  (cd bench/guests && "$tools/componentize-py/bin/componentize-py" -d "$out/py-wit" -w hello \
    componentize hello -o "$out/py_hello.wasm")
  echo "$py_stamp" >"$out/py_hello.stamp"
fi
