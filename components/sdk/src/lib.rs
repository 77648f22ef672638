//! Write spike plugins in Rust.
//!
//! A plugin is a `wasi:http/proxy` component that may also import spike's
//! capabilities (`kv`, `blob`, ...). This crate holds the generated bindings
//! for the whole `spike:host/plugin` world and small helpers: HTTP
//! requests and responses (`http`), a router with path parameters and
//! errors mapped to statuses (`router`), JSON bodies and KV values
//! (`json`), the caller, quotas and secrets as answers (`access`),
//! outgoing requests (`client`), streaming blobs (`blob_io`), SQL
//! databases with a D1-shaped API (`sql`) and telemetry: spans, metrics
//! and log records through `wasi:otel` (`telemetry`).
//!
//! ```ignore
//! use spike_sdk::exports::wasi::http::incoming_handler::Guest;
//! use spike_sdk::http::Response;
//! use spike_sdk::kv::Namespace;
//! use spike_sdk::router::{HttpError, Router};
//! use spike_sdk::wasi::http::types::{IncomingRequest, ResponseOutparam};
//!
//! struct Hello;
//!
//! impl Guest for Hello {
//!     fn handle(request: IncomingRequest, out: ResponseOutparam) {
//!         Router::new()
//!             .get("/hello/:name", |_, p| {
//!                 Response::text(200, format!("hello, {}", p.get("name").unwrap_or_default()))
//!             })
//!             .post("/hello/counter", |_, _| -> Result<Response, HttpError> {
//!                 let n = Namespace::open("hello")?.increment("counter", 1)?;
//!                 Ok(Response::json(200, format!(r#"{{"count":{n}}}"#)))
//!             })
//!             .serve(request, out);
//!     }
//! }
//!
//! spike_sdk::export!(Hello);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2`; the output `.wasm` is the
//! component. See `components/hello` for a complete plugin, and
//! `components/chat` for a room handler (the `room-plugin` world, whose
//! bindings a crate generates itself, mapped onto this crate's imports).

wit_bindgen::generate!({
    path: "wit",
    world: "spike:host/plugin",
    pub_export_macro: true,
    export_macro_name: "export",
    default_bindings_module: "spike_sdk",
    generate_all,
});

pub mod access;
pub mod blob_io;
pub mod cache;
pub mod client;
pub mod http;
pub mod json;
pub mod router;
pub mod sql;
pub mod telemetry;

pub use spike::host::{blob, identity, kv, rate_limit, render, rooms, secrets, types::Error};

/// Milliseconds since the Unix epoch by the wall clock (0 before it).
/// std's clock is WASI's wall clock in a component, and the system's in a
/// plugin's native unit tests.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// No time to live and no metadata: `SetOptions { ttl_ms: Some(60_000),
/// ..Default::default() }` for a key that expires.
impl Default for kv::SetOptions {
    fn default() -> Self {
        Self {
            ttl_ms: None,
            metadata: None,
        }
    }
}

impl Error {
    /// The HTTP status that best answers a request that failed with this
    /// error: 403, 400, 413, 507 (a storage quota of the manifest) or 500.
    pub fn status(&self) -> u16 {
        match self {
            Error::AccessDenied(_) => 403,
            Error::InvalidInput(_) => 400,
            _ if self.is_quota_exceeded() => 507,
            Error::TooLarge(_) => 413,
            Error::Internal(_) => 500,
        }
    }

    /// Whether a write was refused for the quota of what the plugin's
    /// writes may fill (its manifest's `[storage]`, or a room's
    /// `max_log_mib`): the host says so as `too-large`, its message
    /// starting `quota exceeded:`.
    pub fn is_quota_exceeded(&self) -> bool {
        matches!(self, Error::TooLarge(m) if m.starts_with("quota exceeded"))
    }

    /// The error's message.
    pub fn message(&self) -> &str {
        match self {
            Error::AccessDenied(m)
            | Error::InvalidInput(m)
            | Error::TooLarge(m)
            | Error::Internal(m) => m,
        }
    }

    /// A short code for JSON error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Error::AccessDenied(_) => "access_denied",
            Error::InvalidInput(_) => "invalid_input",
            _ if self.is_quota_exceeded() => "quota_exceeded",
            Error::TooLarge(_) => "too_large",
            Error::Internal(_) => "internal",
        }
    }
}
