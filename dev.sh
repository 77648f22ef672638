#!/usr/bin/env bash
# The two commands of this project, each from a fresh machine:
#   ./dev.sh serve [spike serve flags...]   set up, build guests, the editor site and host (release), run spike
#   ./dev.sh test                           set up, build guests, check format and lints, run every test
set -euo pipefail
cd "$(dirname "$0")"
# One target directory for the host and the guests, outside the clone so a
# CI cache can keep it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"

step() { printf '\n== %s\n' "$*"; }

case "${1:-}" in
  serve)
    shift
    # Only what serving needs: the test tools and fixtures are the test
    # command's.
    step "set-up"; scripts/setup.sh serve
    step "guest components"; scripts/build-guests.sh --shipped
    step "editor site"; scripts/build-site.sh
    step "host (release)"; cargo build --release -p spike
    # Sign-in for the editor (plugins/dev-tokens.toml): an HS256 key for
    # this machine, made once and kept with the data, unless one is given.
    if [ -z "${SPIKE_SECRET_JWT_HS256_KEY:-}" ]; then
      key="${SPIKE_DATA:-data}/dev-jwt-hs256.key"
      # The data folder is the operator's alone (spike keeps it 0700).
      (umask 077; mkdir -p "$(dirname "$key")")
      [ -s "$key" ] || (umask 077; head -c 32 /dev/urandom | base64 >"$key")
      SPIKE_SECRET_JWT_HS256_KEY=$(cat "$key")
      export SPIKE_SECRET_JWT_HS256_KEY
    fi
    step "spike serve on ${SPIKE_LISTEN:-127.0.0.1:8787}"
    exec "$CARGO_TARGET_DIR/release/spike" serve --site /=site/dist --access-log "$@"
    ;;
  test)
    step "set-up"; scripts/setup.sh test
    step "guest components"; scripts/build-guests.sh
    step "editor site"; scripts/build-site.sh
    step "format"; cargo fmt --all --check
    step "WIT reference page"; python3 scripts/wit-reference.py --check
    # The SDK is published with the WIT it was built from (its `wit` link).
    step "SDK package"
    cargo package -p spike-sdk --allow-dirty --list 2>/dev/null | grep -x wit/worlds.wit >/dev/null \
      || { echo "the spike-sdk package lacks its WIT (components/sdk/wit)" >&2; exit 1; }
    step "lints (host and tests)"; cargo clippy --all-targets -- -D warnings
    step "lints (guests, wasm32-wasip2)"
    guests=()
    while read -r package; do guests+=(-p "$package"); done < scripts/guests.txt
    cargo clippy --target wasm32-wasip2 "${guests[@]}" -- -D warnings
    # The host crate (unit tests), tests/ (end to end), the fuzz targets'
    # regressions and a short run of each (fuzz/), and the unit tests of
    # hello (its range parsing), auth (keys, TURN), transpile (golden
    # tests whose output Node runs), ai (translation, SSE) and npm (ranges,
    # exports, tarballs, the CommonJS scan), run natively;
    # auth, transpile and ai on their own, since building them with the host
    # would change the features of shared crates and build the host twice.
    # A hung test must fail CI, not stall it.
    step "tests"
    # The cluster, crash and restart tests run the spike binary.
    cargo build -p spike
    timeout 1800 cargo test -p spike -p spike-objects -p spike-sql -p spike-storage -p spike-e2e -p spike-fuzz -p hello
    timeout 600 cargo test -p spike-sdk -p auth -p cms -p transpile -p ai -p npm
    ;;
  *)
    echo "usage: ./dev.sh serve [flags for spike serve] | ./dev.sh test" >&2
    exit 2
    ;;
esac
