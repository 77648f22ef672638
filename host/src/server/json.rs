//! The host's JSON answers: `application/json`, ending in a newline, so
//! that `curl` leaves the prompt on a line of its own and a log of answers
//! is one answer a line.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use serde::Serialize;

/// A JSON answer (200 unless paired with a status).
pub struct JsonLine<T>(pub T);

impl<T: Serialize> IntoResponse for JsonLine<T> {
    fn into_response(self) -> Response {
        let mut bytes = match serde_json::to_vec(&self.0) {
            Ok(bytes) => bytes,
            // Only the host's own values come here; one that does not
            // serialize is a bug, said as plainly as any other error.
            Err(e) => format!(
                r#"{{"error":{{"code":"internal","message":"the answer is not JSON: {e}"}}}}"#
            )
            .into_bytes(),
        };
        bytes.push(b'\n');
        let mut resp = bytes.into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}
