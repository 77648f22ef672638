//! One libFuzzer binary for every target: `SPIKE_FUZZ_TARGET` names the
//! one of `spike::fuzz::TARGETS` to run (looked up once).
#![no_main]

use std::sync::LazyLock;

static TARGET: LazyLock<fn(&[u8])> = LazyLock::new(|| {
    let name = std::env::var("SPIKE_FUZZ_TARGET")
        .expect("SPIKE_FUZZ_TARGET names a target of spike::fuzz");
    let target = spike::fuzz::TARGETS.iter().find(|(n, _)| *n == name);
    target.unwrap_or_else(|| panic!("no fuzz target {name}")).1
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| (*TARGET)(data));
