//! An OTLP collector (http/protobuf) that takes spans and throws them
//! away unread, as cheaply as it can, for benchmarks: `otlp-sink
//! [address]` (default 127.0.0.1:4318) serves until killed. It answers
//! each export with an empty `ExportTraceServiceResponse` (no bytes: all
//! its fields are optional).

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4318".into());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .expect("an address such as 127.0.0.1:4318");
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(|_body: axum::body::Bytes| async {
            ([("content-type", "application/x-protobuf")], "")
        }),
    );
    println!("listening on http://{}", listener.local_addr().unwrap());
    axum::serve(listener, app).await.unwrap();
}
