//! A 60 s soak of every service at once (`spike_e2e::soak`): no answer
//! other than what each service promises, and the server's open files and
//! memory flat once warm. Its latency is reported, not judged: speed is
//! measured in `bench/soak.sh` (10 minutes, the release build).

use std::time::Duration;

use spike_e2e::soak::{Settings, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_at_once_for_a_minute() {
    let seconds = std::env::var("SPIKE_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let settings = Settings {
        duration: Duration::from_secs(seconds),
        members: 200,
        http_clients: 8,
        binary: None,
    };
    let report = run(&settings).await;
    let summary = report.json();
    eprintln!("{summary:#}");
    assert_eq!(report.error_count, 0, "{:#?}", report.errors);
    for kind in ["hello", "kv", "cms", "transpile", "render", "ai"] {
        assert!(
            report.calls.get(kind).is_some_and(|&n| n > 0),
            "no {kind} calls: {summary}"
        );
    }
    // Every member's messages reached the 20 members of its room.
    assert!(
        report.deliveries > 200 * 20 * seconds.saturating_sub(10),
        "{summary}"
    );
    let ((_, files_warm), (_, files_end)) = report.warm_and_end();
    assert!(files_end <= files_warm + 16, "open files grew: {summary}");
    // Flat within a debug build's noise: a leak of a request's worth of
    // memory per request would be hundreds of MiB a minute.
    let slope = report.slope_per_min(|s| s.1) / 1024.0;
    assert!(slope < 32.0, "RSS grew {slope:.1} MiB a minute: {summary}");
}
