//! Errors in the shape of the API the caller speaks, so that the official
//! SDKs raise their usual exceptions: OpenAI's
//! `{"error": {"message", "type", "param", "code"}}` and Anthropic's
//! `{"type": "error", "error": {"type", "message"}}`, with the status each
//! would send.

use serde_json::{Value, json};
use spike_sdk::http::Response;
use spike_sdk::router::HttpError;

use crate::config::Format;
use crate::upstream::FetchError;

/// What went wrong, in the terms both APIs share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    TooLarge,
    RateLimited,
    /// The provider failed, or sent what cannot be read.
    Upstream,
    /// No provider can take the call now (breaker open, no key set).
    Unavailable,
    /// The deadline passed.
    Timeout,
}

/// An error to answer with.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub kind: Kind,
    pub message: String,
    /// Seconds, for `Retry-After`.
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        let status = match kind {
            Kind::InvalidRequest => 400,
            Kind::Authentication => 401,
            Kind::Permission => 403,
            Kind::NotFound => 404,
            Kind::TooLarge => 413,
            Kind::RateLimited => 429,
            Kind::Upstream => 502,
            Kind::Unavailable => 503,
            Kind::Timeout => 504,
        };
        Self {
            status,
            kind,
            message: message.into(),
            retry_after_s: None,
        }
    }

    /// An SDK helper's answer (`spike_sdk::access`) in this API's terms,
    /// with its `Retry-After`.
    pub fn from_http(e: HttpError) -> Self {
        let kind = match e.status {
            401 => Kind::Authentication,
            403 => Kind::Permission,
            404 => Kind::NotFound,
            413 => Kind::TooLarge,
            429 => Kind::RateLimited,
            502 => Kind::Upstream,
            504 => Kind::Timeout,
            400..=499 => Kind::InvalidRequest,
            _ => Kind::Unavailable,
        };
        let retry_after = e
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))
            .and_then(|(_, v)| v.parse().ok());
        let error = Self::new(kind, e.message);
        match retry_after {
            Some(seconds) => error.retry_after(seconds),
            None => error,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Kind::InvalidRequest, message)
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds.max(1));
        self
    }

    /// An error a provider answered with, read from its body (either shape),
    /// keeping its status.
    pub fn from_upstream(status: u16, body: &[u8]) -> Self {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let error = parsed.as_ref().and_then(|v| v.get("error"));
        let message = error
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("the provider answered {status}"));
        let kind = match status {
            400 | 422 => Kind::InvalidRequest,
            401 => Kind::Authentication,
            403 => Kind::Permission,
            404 => Kind::NotFound,
            413 => Kind::TooLarge,
            429 => Kind::RateLimited,
            504 => Kind::Timeout,
            503 | 529 => Kind::Unavailable,
            _ => Kind::Upstream,
        };
        Self {
            status,
            kind,
            message,
            retry_after_s: None,
        }
    }

    /// A call to `who` that got no answer: 504 for a deadline, 503 when
    /// the host would not send it (the manifest does not grant the host),
    /// 502 otherwise.
    pub fn unanswered(who: &str, e: &FetchError) -> Self {
        let kind = match e {
            FetchError::Timeout => Kind::Timeout,
            FetchError::Denied(_) | FetchError::InvalidUrl(_) => Kind::Unavailable,
            _ => Kind::Upstream,
        };
        Self::new(kind, format!("{who}: {e}"))
    }

    /// The body in `format`'s shape.
    pub fn body(&self, format: Format) -> Value {
        match format {
            Format::OpenAi => {
                let (kind, code) = match self.kind {
                    Kind::InvalidRequest => ("invalid_request_error", Value::Null),
                    Kind::Authentication => ("authentication_error", json!("invalid_api_key")),
                    Kind::Permission => ("permission_error", Value::Null),
                    Kind::NotFound => ("invalid_request_error", json!("model_not_found")),
                    Kind::TooLarge => ("invalid_request_error", json!("request_too_large")),
                    Kind::RateLimited => ("requests", json!("rate_limit_exceeded")),
                    Kind::Upstream => ("server_error", Value::Null),
                    Kind::Unavailable => ("server_error", json!("service_unavailable")),
                    Kind::Timeout => ("server_error", json!("timeout")),
                };
                json!({"error": {"message": self.message, "type": kind, "param": null, "code": code}})
            }
            Format::Anthropic => {
                let kind = match self.kind {
                    Kind::InvalidRequest => "invalid_request_error",
                    Kind::Authentication => "authentication_error",
                    Kind::Permission => "permission_error",
                    Kind::NotFound => "not_found_error",
                    Kind::TooLarge => "request_too_large",
                    Kind::RateLimited => "rate_limit_error",
                    Kind::Upstream => "api_error",
                    Kind::Unavailable => "overloaded_error",
                    Kind::Timeout => "timeout_error",
                };
                json!({"type": "error", "error": {"type": kind, "message": self.message}})
            }
        }
    }

    /// The response in `format`'s shape.
    pub fn response(&self, format: Format) -> Response {
        let mut resp = Response::json(self.status, self.body(format).to_string());
        if let Some(s) = self.retry_after_s {
            resp = resp.header("retry-after", s.to_string());
        }
        resp
    }

    /// The event that ends a stream with this error: OpenAI's SDK raises on
    /// a `data:` line holding `error`, Anthropic's on an `error` event.
    pub fn stream_event(&self, format: Format) -> String {
        let body = self.body(format);
        match format {
            Format::OpenAi => format!("data: {body}\n\n"),
            Format::Anthropic => format!("event: error\ndata: {body}\n\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_errors_keep_their_status_and_message() {
        let e = ApiError::from_upstream(
            429,
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
        );
        assert_eq!((e.status, e.kind), (429, Kind::RateLimited));
        assert_eq!(e.message, "slow down");
        let body = e.body(Format::OpenAi);
        assert_eq!(body["error"]["message"], "slow down");
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        let garbage = ApiError::from_upstream(500, b"<html>");
        assert_eq!(garbage.message, "the provider answered 500");
        assert_eq!(
            garbage.body(Format::Anthropic)["error"]["type"],
            "api_error"
        );
    }
}
