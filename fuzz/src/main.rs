//! `spike-fuzz [--seconds N] [--seed S] [TARGET...]`: fuzzes each target
//! (all by default) for N seconds (60), printing a line per target, and
//! exits 1 at the first crash, saying where its input was saved.
//! `spike-fuzz --list` names the targets.

use std::time::Duration;

fn main() {
    let mut seconds = 60u64;
    let mut seed = spike_fuzz::run_seed();
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| fail(&format!("{flag} takes a number")))
        };
        match arg.as_str() {
            "--seconds" => seconds = value("--seconds"),
            "--seed" => seed = value("--seed"),
            "--list" => {
                for (name, _) in spike_fuzz::TARGETS {
                    println!("{name}");
                }
                return;
            }
            name => names.push(name.to_string()),
        }
    }
    let targets: Vec<_> = spike_fuzz::TARGETS
        .iter()
        .filter(|(n, _)| names.is_empty() || names.iter().any(|m| m == n))
        .collect();
    if targets.len() < names.len().max(1) {
        let known: Vec<_> = spike_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        fail(&format!(
            "unknown target; the targets: {}",
            known.join(", ")
        ));
    }
    for target in targets {
        match spike_fuzz::fuzz(target, Duration::from_secs(seconds), seed) {
            Ok(report) => println!(
                "{{\"target\":\"{}\",\"runs\":{},\"seconds\":{:.1},\"per_s\":{:.0},\"seed\":{seed},\"crashes\":0}}",
                report.target,
                report.runs,
                report.elapsed.as_secs_f64(),
                report.runs as f64 / report.elapsed.as_secs_f64()
            ),
            Err(crash) => fail(&format!("{crash}\nseed {seed}")),
        }
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}
