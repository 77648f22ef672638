//! The tests' fake AI provider on a port of its own, for benchmarks:
//! `fake-ai [address]` (default 127.0.0.1:0) prints `listening on <addr>`
//! and serves until killed. Requests are not recorded.

use std::sync::atomic::Ordering;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()
        .expect("an address such as 127.0.0.1:9000");
    let fake = spike_e2e::fake_ai::FakeAi::start_on(addr).await;
    fake.state.quiet.store(true, Ordering::Relaxed);
    if let Some(ms) = std::env::var("CHUNK_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        fake.state.chunk_delay_ms.store(ms, Ordering::Relaxed);
    }
    println!("listening on {}", fake.addr);
    std::future::pending::<()>().await;
}
