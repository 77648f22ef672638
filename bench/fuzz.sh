#!/usr/bin/env bash
# Fuzzing's long form. Each target of spike::fuzz (manifest, text room
# edits, room log, Yjs and LiveStore messages, tokens and cookies, byte
# ranges) for SECONDS_EACH (300) under libFuzzer (`cargo fuzz`, coverage-
# guided; it needs nightly flags, given to the stable toolchain with
# RUSTC_BOOTSTRAP=1, and a sanitizer build in a target folder of its own;
# built with -O, without debug assertions, as spike ships: with them yrs
# stops at once on a Yjs client id over 53 bits, which release builds
# mask),
# or with the stable driver (`spike-fuzz`, no coverage feedback) when
# FUZZER=stable or cargo fuzz cannot build. Then the HTTP targets (tokens
# into the auth component, transpile input, the admin API, paths, ranges)
# against the real server, SECONDS_EACH each.
#
# A crash is saved in fuzz/artifacts/<target>/; copy it to
# fuzz/regressions/<target>/ with the fix, and every test run replays it.
#
#   bench/fuzz.sh
#   SECONDS_EACH=30 FUZZER=stable bench/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spike-target}"
each="${SECONDS_EACH:-300}"
scripts/setup.sh
scripts/build-guests.sh >/dev/null
targets=$(cargo run --quiet -p spike-fuzz -- --list)

libfuzzer() {
  command -v cargo-fuzz >/dev/null || cargo install --quiet --locked cargo-fuzz
  # The host's dependencies at the versions the project tested.
  cp Cargo.lock fuzz/libfuzzer/Cargo.lock
  export RUSTC_BOOTSTRAP=1
  local fuzz_target="$HOME/.cache/spike-fuzz-target"
  CARGO_TARGET_DIR="$fuzz_target" cargo fuzz build -O --fuzz-dir fuzz/libfuzzer target || return 1
  # Crashes of this run only: older ones may be left in fuzz/artifacts/.
  local started="$fuzz_target/fuzz-started"
  touch "$started"
  for t in $targets; do
    local corpus="fuzz/libfuzzer/corpus/$t"
    mkdir -p "$corpus" "fuzz/artifacts/$t" "fuzz/seeds/$t" "fuzz/regressions/$t"
    [ "$t" = manifest ] && cp plugins/*.toml "$corpus/"
    echo "== $t (libFuzzer, ${each}s)"
    SPIKE_FUZZ_TARGET=$t CARGO_TARGET_DIR="$fuzz_target" cargo fuzz run -O --fuzz-dir fuzz/libfuzzer target \
      "$corpus" "fuzz/seeds/$t" "fuzz/regressions/$t" -- \
      -max_total_time="$each" -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 2>&1 |
      grep -E '^(#[0-9]+ *DONE|stat::number_of_executed_units|stat::peak_rss|==[0-9]+==|SUMMARY|artifact_prefix|Test unit written)' || true
    if find "fuzz/artifacts/$t" -type f -newer "$started" | grep -q .; then
      echo "crash in $t: fuzz/artifacts/$t"
      exit 1
    fi
  done
}

if [ "${FUZZER:-libfuzzer}" = stable ] || ! libfuzzer; then
  echo "== the stable driver, ${each}s each"
  cargo run --quiet --release -p spike-fuzz -- --seconds "$each"
fi
echo "== HTTP targets, ${each}s each"
cargo build --quiet -p spike
SPIKE_FUZZ_SECONDS="$each" cargo test --quiet -p spike-e2e --test fuzz_http -- --nocapture 2>&1 |
  grep -E 'requests, seed|panicked|test result'
