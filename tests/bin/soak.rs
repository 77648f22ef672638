//! `soak SPIKE [SECONDS] [MEMBERS]`: the soak of `spike_e2e::soak` against
//! the spike binary given (a release build), for SECONDS (600) with
//! MEMBERS room members (500); prints its report as JSON (bench/soak.sh).

use std::time::Duration;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let binary = args.next().expect("usage: soak SPIKE [SECONDS] [MEMBERS]");
    let number = |arg: Option<String>, default| arg.and_then(|a| a.parse().ok()).unwrap_or(default);
    let seconds = number(args.next(), 600);
    let members = number(args.next(), 500) as usize;
    let settings = spike_e2e::soak::Settings {
        duration: Duration::from_secs(seconds),
        members,
        http_clients: 16,
        binary: Some(binary.into()),
    };
    let report = spike_e2e::soak::run(&settings).await;
    println!("{}", report.json());
    if report.error_count > 0 {
        std::process::exit(1);
    }
}
