//! An OTLP collector (http/protobuf) that takes spans and throws them
//! away undecoded, for benchmarks: `otlp-sink [address]` (default
//! 127.0.0.1:4318) prints `listening on <url>` and serves until killed.

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4318".into())
        .parse()
        .expect("an address such as 127.0.0.1:4318");
    let sink = spike_e2e::otlp::Receiver::sink(addr).await;
    println!("listening on {}", sink.url);
    std::future::pending::<()>().await;
}
