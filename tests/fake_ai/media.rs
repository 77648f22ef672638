//! The fake's audio transcriptions (OpenAI's audio API, the upload read as
//! it comes) and Replicate's predictions (created, polled, canceled).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;

use super::{FakeState, OPENAI_KEY, error_json};

pub(super) async fn transcribe(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if key != Some(OPENAI_KEY) {
        return error_json(401, false, "Incorrect API key provided.");
    }
    // Read as it comes, keeping only the size and the form's head.
    let mut stream = body.into_data_stream();
    let (mut size, mut head) = (0usize, Vec::new());
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return error_json(400, false, "the upload broke off");
        };
        size += chunk.len();
        if head.len() < 4096 {
            head.extend_from_slice(&chunk[..chunk.len().min(4096 - head.len())]);
        }
    }
    state.record(
        "/v1/audio/transcriptions",
        &headers,
        &Bytes::from(head.clone()),
    );
    let head = String::from_utf8_lossy(&head);
    if !head.contains("name=\"file\"") {
        return error_json(400, false, "file: field required");
    }
    axum::Json(json!({"text": format!("heard {size} bytes")})).into_response()
}

pub(super) async fn create_prediction(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    model: Option<Path<(String, String)>>,
    body: Bytes,
) -> Response {
    state.record("/v1/predictions", &headers, &body);
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {OPENAI_KEY}"))
    {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"title": "Unauthenticated", "detail": "You did not pass a valid authentication token", "status": 401}))).into_response();
    }
    let id = format!("pred{}", state.predictions.lock().unwrap().len() + 1);
    let polls = state.prediction_polls.load(Ordering::Relaxed);
    state.predictions.lock().unwrap().insert(id.clone(), polls);
    let model = model.map(|Path((o, n))| format!("{o}/{n}"));
    (
        StatusCode::CREATED,
        axum::Json(
            json!({"id": id, "model": model, "status": "starting", "output": null,
        "urls": {"get": format!("/v1/predictions/{id}")}}),
        ),
    )
        .into_response()
}

pub(super) async fn poll_prediction(
    State(state): State<Arc<FakeState>>,
    Path(id): Path<String>,
) -> Response {
    let mut predictions = state.predictions.lock().unwrap();
    let Some(left) = predictions.get_mut(&id) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"detail": "Not found."})),
        )
            .into_response();
    };
    if *left == u64::MAX {
        return axum::Json(json!({"id": id, "status": "canceled", "output": null})).into_response();
    }
    if *left > 0 {
        *left -= 1;
        return axum::Json(json!({"id": id, "status": "processing", "output": null}))
            .into_response();
    }
    axum::Json(json!({"id": id, "status": "succeeded", "output": ["https://example.com/out.png"]}))
        .into_response()
}

pub(super) async fn cancel_prediction(
    State(state): State<Arc<FakeState>>,
    Path(id): Path<String>,
) -> Response {
    state.record(
        &format!("/v1/predictions/{id}/cancel"),
        &HeaderMap::new(),
        &Bytes::new(),
    );
    if let Some(left) = state.predictions.lock().unwrap().get_mut(&id) {
        *left = u64::MAX;
    }
    axum::Json(json!({"id": id, "status": "canceled"})).into_response()
}
