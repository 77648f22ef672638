//! What the machine can do for the hello benchmark: the body and headers of
//! the plain wasi:http hello, served by axum on tokio's default runtime with
//! no wasm and no limits. `bench/http_hello.sh` runs it beside spike.
//!
//!     native-hello 127.0.0.1:8792

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8792".into());
    let app = Router::new().fallback(get(|| async {
        ([(CONTENT_TYPE, "text/plain")], "Hello, world!\n")
    }));
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .unwrap_or_else(|e| panic!("binding {addr}: {e}"));
    axum::serve(listener, app).await.expect("serving");
}
