#!/usr/bin/env bash
# Installs what building and testing spike needs on a fresh machine of this
# kind (Debian 12 with rustup): the wasm32-wasip2 target, rustfmt and clippy.
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
