//! Every fuzz target: its regressions (inputs that once failed) and
//! seeds pass, then a short mutation run (`SPIKE_FUZZ_SECONDS`, 2 each by
//! default; `SPIKE_FUZZ_SEED` repeats a run) finds no crash.

use std::time::Duration;

#[test]
fn every_target_survives_its_regressions_and_a_short_run() {
    let seconds = std::env::var("SPIKE_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let seed = spike_fuzz::run_seed();
    for target in spike_fuzz::TARGETS {
        for (i, input) in spike_fuzz::regressions(target.0).iter().enumerate() {
            if let Err(message) = spike_fuzz::try_input(target, input) {
                panic!("{} regression {i} fails again: {message}", target.0);
            }
        }
        let budget = Duration::from_secs_f64(seconds);
        match spike_fuzz::fuzz(target, budget, seed) {
            Ok(report) => eprintln!("{}: {} inputs, seed {seed}", report.target, report.runs),
            Err(crash) => panic!("{crash}\nseed {seed}"),
        }
    }
}
