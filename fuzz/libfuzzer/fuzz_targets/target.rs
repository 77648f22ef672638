//! One libFuzzer binary for every target: `SPIKE_FUZZ_TARGET` names the
//! one of `spike::fuzz::TARGETS` to run.
#![no_main]

use std::sync::LazyLock;

static TARGET: LazyLock<String> = LazyLock::new(|| {
    std::env::var("SPIKE_FUZZ_TARGET").expect("SPIKE_FUZZ_TARGET names a target of spike::fuzz")
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    assert!(spike::fuzz::run(&TARGET, data), "no fuzz target {}", *TARGET);
});
