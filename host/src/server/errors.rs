//! Every error the host answers with: a status and a JSON body
//! `{ "error": { "code", "message" } }`.

use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::runtime::dispatch::DispatchError;

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds to send as `Retry-After` (a 503 says 1 without it).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A request body that stopped arriving.
    pub fn body_timeout(idle: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body stalled: no bytes for {} ms",
                idle.as_millis()
            ),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut resp = (self.status, super::json::JsonLine(body)).into_response();
        // Busy is a moment's state, not a verdict: say when to come back.
        let retry_after = match self.retry_after {
            Some(secs) => Some(secs),
            None if self.status == StatusCode::SERVICE_UNAVAILABLE => Some(1),
            None => None,
        };
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        resp
    }
}

impl From<DispatchError> for ApiError {
    fn from(e: DispatchError) -> Self {
        let (status, code) = match &e {
            DispatchError::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            DispatchError::BodyTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            DispatchError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "plugin_timeout"),
            DispatchError::CpuLimit(_) => (StatusCode::GATEWAY_TIMEOUT, "plugin_cpu_limit"),
            DispatchError::MemoryLimit(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "plugin_memory_limit")
            }
            DispatchError::Trap(_) => (StatusCode::INTERNAL_SERVER_ERROR, "plugin_trap"),
            DispatchError::NoResponse => (StatusCode::INTERNAL_SERVER_ERROR, "plugin_no_response"),
            DispatchError::Guest(_) => (StatusCode::BAD_GATEWAY, "plugin_error"),
            DispatchError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            DispatchError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        Self::new(status, code, e.to_string())
    }
}
