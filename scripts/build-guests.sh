#!/usr/bin/env bash
# Builds every guest component (components/*, tests/fixtures/*) for
# wasm32-wasip2 into $CARGO_TARGET_DIR/wasm32-wasip2/guest/, and puts the
# shipped plugins' components (hello, auth, cms, chat, transpile, ai,
# render) beside their manifests in plugins/.
#
#   scripts/build-guests.sh            every guest (the tests need them all)
#   scripts/build-guests.sh --shipped  the shipped plugins only (serving)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=$HOME/.cache/spike-target}"
export CARGO_TARGET_DIR
out="$CARGO_TARGET_DIR/wasm32-wasip2/guest"
shipped=(hello auth cms chat transpile ai render notes npm)

if [ "${1:-}" = --shipped ]; then
  guests=()
  for plugin in "${shipped[@]}"; do guests+=(-p "$plugin"); done
  cargo build --quiet --profile guest --target wasm32-wasip2 "${guests[@]}"
  for plugin in "${shipped[@]}"; do cp "$out/$plugin.wasm" "plugins/$plugin.wasm"; done
  echo "shipped plugins built in $out"
  exit 0
fi

# Every guest package, listed once in scripts/guests.txt.
guests=()
while read -r package; do guests+=(-p "$package"); done < scripts/guests.txt
cargo build --quiet --profile guest --target wasm32-wasip2 "${guests[@]}"

# Two builds of one fixture that differ only in the version they answer
# with, for the hot swap tests.
for v in 1 2; do
  SPIKE_FIXTURE_VERSION=$v cargo build --quiet --profile guest --target wasm32-wasip2 -p fixture-versioned
  cp "$out/fixture_versioned.wasm" "$out/fixture_versioned_v$v.wasm"
  SPIKE_FIXTURE_VERSION=$v cargo build --quiet --profile guest --target wasm32-wasip2 -p fixture-room-faults
  cp "$out/fixture_room_faults.wasm" "$out/fixture_room_faults_v$v.wasm"
done

# The Python guest of the WASI standards' tests, by componentize-py from
# the test tools' venv (scripts/setup.sh test), when its sources changed.
python_guest="$(realpath "$out")/fixture_python_standards.wasm"
python_src=tests/python-standards
if [ ! -f "$python_guest" ] || [ -n "$(find "$python_src/app.py" "$python_src/wit/" wit/deps/ -newer "$python_guest" 2>/dev/null)" ]; then
  tools="${SPIKE_TOOLS_DIR:-$HOME/.cache/spike-tools}"
  (cd "$python_src" && "$tools/venv/bin/componentize-py" -d wit -w app componentize app -o "$python_guest.part" >/dev/null)
  mv "$python_guest.part" "$python_guest"
fi

for plugin in "${shipped[@]}"; do cp "$out/$plugin.wasm" "plugins/$plugin.wasm"; done
echo "guests built in $out"
