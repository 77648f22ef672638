//! A local AI provider for the tests and benchmarks: it speaks OpenAI's
//! chat completions and audio transcriptions, Anthropic's messages (SSE
//! included) and Replicate's predictions on one port, checks the keys it
//! was given, records every request, and can be told to fail, rate-limit
//! with `Retry-After`, stall, cut a stream or send garbage (`Fault`).
//!
//! Its answers are predictable: "echo: <the last user text>", or, when the
//! request offers tools and the last turn is the user's, a call of the first
//! tool with `{"city": "Oslo"}`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde_json::{Value, json};

mod media;

/// The key the fake's OpenAI side accepts.
pub const OPENAI_KEY: &str = "sk-fake-openai-5f1c2a9e7b3d";
/// The key the fake's Anthropic side accepts.
pub const ANTHROPIC_KEY: &str = "sk-ant-fake-8e4b6d2c0a1f";

/// What the fake does to the next request instead of answering well.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answers `status` with an error body, and `Retry-After` if given.
    Status {
        status: u16,
        retry_after: Option<&'static str>,
    },
    /// Waits this long before the response head.
    Stall(Duration),
    /// Streams this many events, then sends nothing more for the duration.
    StallMidStream(usize, Duration),
    /// Streams this many events, then breaks the connection.
    Cut(usize),
    /// A 200 whose body is not JSON.
    Garbage,
    /// A 400 whose message holds the key it was sent.
    EchoKey,
    /// A 200 whose text holds the key it was sent, written as `Leak`
    /// says; streamed four characters an event, so that the key is split
    /// across events.
    LeakKey(Leak),
    /// Streams this many events, then one `:` (no whole event) every
    /// interval, for ever.
    Trickle(usize, Duration),
}

/// How `Fault::LeakKey` writes the key.
#[derive(Debug, Clone, Copy)]
pub enum Leak {
    Plain,
    Base64,
    Percent,
}

impl Leak {
    /// The text a leaking answer says.
    pub fn text(self, key: &str) -> String {
        use base64::Engine as _;
        let written = match self {
            Leak::Plain => key.to_string(),
            Leak::Base64 => base64::engine::general_purpose::STANDARD.encode(format!("k={key}")),
            Leak::Percent => key.bytes().map(|b| format!("%{b:02X}")).collect(),
        };
        format!("here it is: {written} (keep it)")
    }
}

/// The pieces a streamed text goes in: words, or four characters for a
/// leak (so that the key spans several events).
fn pieces(text: &str, fault: &Option<Fault>) -> Vec<String> {
    if matches!(fault, Some(Fault::LeakKey(_))) {
        let chars: Vec<char> = text.chars().collect();
        return chars.chunks(4).map(|c| c.iter().collect()).collect();
    }
    (text.split(' ').enumerate())
        .map(|(i, word)| {
            if i == 0 {
                word.to_string()
            } else {
                format!(" {word}")
            }
        })
        .collect()
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: std::time::Instant,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What the fake knows and counts.
#[derive(Default)]
pub struct FakeState {
    faults: Mutex<VecDeque<Fault>>,
    requests: Mutex<Vec<Recorded>>,
    /// Streams whose reader went away before their end.
    pub cancelled: AtomicU64,
    /// Streams sent to their end.
    pub completed: AtomicU64,
    /// Pause between two streamed events, ms.
    pub chunk_delay_ms: AtomicU64,
    /// Polls of a prediction before it succeeds.
    pub prediction_polls: AtomicU64,
    predictions: Mutex<std::collections::HashMap<String, u64>>,
    /// Whether to record requests (off for benchmarks).
    pub quiet: std::sync::atomic::AtomicBool,
}

impl FakeState {
    /// Queues faults for the next requests, one each.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.faults.lock().unwrap().extend(faults);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.requests.lock().unwrap().clear();
        self.faults.lock().unwrap().clear();
    }

    fn next_fault(&self) -> Option<Fault> {
        self.faults.lock().unwrap().pop_front()
    }

    fn record(&self, path: &str, headers: &HeaderMap, body: &Bytes) {
        if self.quiet.load(Ordering::Relaxed) {
            return;
        }
        self.requests.lock().unwrap().push(Recorded {
            path: path.into(),
            headers: headers.clone(),
            body: body.clone(),
            at: std::time::Instant::now(),
        });
    }
}

/// A running fake.
pub struct FakeAi {
    pub addr: SocketAddr,
    pub state: Arc<FakeState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeAi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeAi {
    /// Starts a fake on `addr` (port 0 for any).
    pub async fn start_on(addr: SocketAddr) -> Self {
        let state = Arc::new(FakeState::default());
        state.prediction_polls.store(2, Ordering::Relaxed);
        let app = Router::new()
            .route("/v1/chat/completions", post(openai_chat))
            .route("/v1/messages", post(anthropic_messages))
            .route("/v1/audio/transcriptions", post(media::transcribe))
            .route("/v1/predictions", post(media::create_prediction))
            .route(
                "/v1/models/{owner}/{name}/predictions",
                post(media::create_prediction),
            )
            .route("/v1/predictions/{id}", get(media::poll_prediction))
            .route(
                "/v1/predictions/{id}/cancel",
                post(media::cancel_prediction),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, state, task }
    }

    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// The base URL of its API (`http://127.0.0.1:<port>/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

pub(crate) fn error_json(status: u16, anthropic: bool, message: &str) -> Response {
    let body = if anthropic {
        let kind = match status {
            401 => "authentication_error",
            429 => "rate_limit_error",
            529 => "overloaded_error",
            s if s >= 500 => "api_error",
            _ => "invalid_request_error",
        };
        json!({"type": "error", "error": {"type": kind, "message": message}})
    } else {
        json!({"error": {"message": message, "type": "fake_error", "param": null, "code": null}})
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(body)).into_response()
}

/// The text of the last user turn, in either format.
fn last_user_text(messages: &[Value]) -> (String, bool) {
    let Some(last) = messages.last() else {
        return (String::new(), false);
    };
    let from_tool = last["role"] == "tool"
        || last["content"]
            .as_array()
            .is_some_and(|b| b.iter().any(|b| b["type"] == "tool_result"));
    let text = match &last["content"] {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| {
                b["text"]
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| b["content"].as_str().map(str::to_string))
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    };
    (text, from_tool)
}

/// What the fake answers: text, or a call of `tool`.
struct Reply {
    text: String,
    tool: Option<String>,
    input_tokens: u64,
    output_tokens: u64,
}

fn reply(request: &Value) -> Reply {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let (text, from_tool) = last_user_text(&messages);
    let tool = request["tools"]
        .as_array()
        .and_then(|t| t.first())
        .filter(|_| !from_tool)
        .and_then(|t| t["function"]["name"].as_str().or(t["name"].as_str()))
        .map(str::to_string);
    let text = if from_tool {
        format!("the tool said: {text}")
    } else {
        format!("echo: {text}")
    };
    let input_tokens = messages.len() as u64 * 10;
    let output_tokens = text.split_whitespace().count() as u64;
    Reply {
        text,
        tool,
        input_tokens,
        output_tokens,
    }
}

/// Applies the next queued fault that acts before the answer; returns the
/// response that replaces the answer, or the stream fault to apply.
async fn before_answer(
    state: &FakeState,
    anthropic: bool,
    key: Option<&str>,
) -> Result<Option<Fault>, Response> {
    match state.next_fault() {
        None => Ok(None),
        Some(Fault::Status {
            status,
            retry_after,
        }) => {
            let mut resp = error_json(status, anthropic, "the fake provider was told to fail");
            if let Some(after) = retry_after {
                resp.headers_mut()
                    .insert("retry-after", after.parse().unwrap());
            }
            Err(resp)
        }
        Some(Fault::Stall(d)) => {
            tokio::time::sleep(d).await;
            Ok(None)
        }
        Some(Fault::Garbage) => Err((StatusCode::OK, "<html>not json").into_response()),
        Some(Fault::EchoKey) => Err(error_json(
            400,
            anthropic,
            &format!("the key {} is not allowed to do that", key.unwrap_or("")),
        )),
        Some(stream_fault) => Ok(Some(stream_fault)),
    }
}

/// A stream of `events`, paced by the state's delay, with `fault` applied;
/// counts whether its reader went away before the end.
fn event_stream(state: Arc<FakeState>, events: Vec<String>, fault: Option<Fault>) -> Response {
    struct Events {
        state: Arc<FakeState>,
        items: VecDeque<String>,
        sent: usize,
        fault: Option<Fault>,
        /// Whether the fake itself ended the stream: at its end (`Some(true)`)
        /// or by a cut (`Some(false)`). `None` when dropped: its reader left.
        ended: Option<bool>,
    }
    impl Drop for Events {
        fn drop(&mut self) {
            match self.ended {
                Some(true) => self.state.completed.fetch_add(1, Ordering::Relaxed),
                Some(false) => 0,
                None => self.state.cancelled.fetch_add(1, Ordering::Relaxed),
            };
        }
    }
    let delay = Duration::from_millis(state.chunk_delay_ms.load(Ordering::Relaxed));
    let events = Events {
        state,
        items: events.into(),
        sent: 0,
        fault,
        ended: None,
    };
    let stream = futures::stream::unfold(events, move |mut ev| async move {
        if ev.sent > 0 && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match ev.fault {
            Some(Fault::Cut(n)) if ev.sent >= n => {
                ev.ended = Some(false);
                return Some((Err(std::io::Error::other("cut")), ev));
            }
            Some(Fault::StallMidStream(n, d)) if ev.sent == n => {
                tokio::time::sleep(d).await;
            }
            Some(Fault::Trickle(n, every)) if ev.sent >= n => {
                tokio::time::sleep(every).await;
                return Some((Ok(Bytes::from_static(b":")), ev));
            }
            _ => {}
        }
        let Some(item) = ev.items.pop_front() else {
            ev.ended = Some(true);
            drop(ev);
            return None;
        };
        ev.sent += 1;
        Some((Ok::<_, std::io::Error>(Bytes::from(item)), ev))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream.boxed()))
        .unwrap()
}

async fn openai_chat(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.record("/v1/chat/completions", &headers, &body);
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let fault = match before_answer(&state, false, key).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    if key != Some(OPENAI_KEY) {
        return error_json(401, false, "Incorrect API key provided.");
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error_json(
            400,
            false,
            "We could not parse the JSON body of your request.",
        );
    };
    let model = request["model"].as_str().unwrap_or("fake").to_string();
    let mut r = reply(&request);
    if let Some(Fault::LeakKey(leak)) = &fault {
        r.text = leak.text(OPENAI_KEY);
    }
    let usage = json!({"prompt_tokens": r.input_tokens, "completion_tokens": r.output_tokens,
                       "total_tokens": r.input_tokens + r.output_tokens});
    let call = r.tool.as_ref().map(|name| {
        json!({"id": "call_fake1", "type": "function", "function": {"name": name, "arguments": "{\"city\":\"Oslo\"}"}})
    });
    let finish = if call.is_some() { "tool_calls" } else { "stop" };
    if request["stream"] != true {
        let mut message = json!({"role": "assistant", "content": r.text, "refusal": null});
        if let Some(call) = call {
            message["content"] = Value::Null;
            message["tool_calls"] = json!([call]);
        }
        return axum::Json(json!({"id": "chatcmpl-fake1", "object": "chat.completion", "created": 1,
            "model": model, "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
            "usage": usage}))
        .into_response();
    }
    let chunk = |delta: Value, finish: Option<&str>| {
        let c = json!({"id": "chatcmpl-fake1", "object": "chat.completion.chunk", "created": 1, "model": model,
                       "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        format!("data: {c}\n\n")
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    match &r.tool {
        Some(name) => {
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_fake1", "type": "function",
                "function": {"name": name, "arguments": ""}}]}),
                None,
            ));
            for part in ["{\"city\":", "\"Oslo\"}"] {
                events.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}),
                    None,
                ));
            }
        }
        None => {
            for piece in pieces(&r.text, &fault) {
                events.push(chunk(json!({"content": piece}), None));
            }
        }
    }
    events.push(chunk(json!({}), Some(finish)));
    if request["stream_options"]["include_usage"] == true {
        let c = json!({"id": "chatcmpl-fake1", "object": "chat.completion.chunk", "created": 1,
                       "model": model, "choices": [], "usage": usage});
        events.push(format!("data: {c}\n\n"));
    }
    events.push("data: [DONE]\n\n".into());
    event_stream(state, events, fault)
}

async fn anthropic_messages(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.record("/v1/messages", &headers, &body);
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    let fault = match before_answer(&state, true, key).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    if key != Some(ANTHROPIC_KEY) {
        return error_json(401, true, "invalid x-api-key");
    }
    if headers.get("anthropic-version").is_none() {
        return error_json(400, true, "anthropic-version: header is required");
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error_json(
            400,
            true,
            "There was an issue with the JSON body of your request.",
        );
    };
    if !request["max_tokens"].is_u64() {
        return error_json(400, true, "max_tokens: Field required");
    }
    let model = request["model"].as_str().unwrap_or("fake").to_string();
    let mut r = reply(&request);
    if let Some(Fault::LeakKey(leak)) = &fault {
        r.text = leak.text(ANTHROPIC_KEY);
    }
    let stop = if r.tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    };
    let mut content = vec![json!({"type": "text", "text": r.text})];
    if let Some(name) = &r.tool {
        content = vec![
            json!({"type": "tool_use", "id": "toolu_fake1", "name": name, "input": {"city": "Oslo"}}),
        ];
    }
    if request["stream"] != true {
        return axum::Json(
            json!({"id": "msg_fake1", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": null,
            "usage": {"input_tokens": r.input_tokens, "output_tokens": r.output_tokens}}),
        )
        .into_response();
    }
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut events = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_fake1", "type": "message",
            "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": r.input_tokens, "output_tokens": 1}}}),
        ),
        event("ping", json!({"type": "ping"})),
    ];
    match &r.tool {
        Some(name) => {
            events.push(event("content_block_start", json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "tool_use", "id": "toolu_fake1", "name": name, "input": {}}})));
            for part in ["{\"city\":", "\"Oslo\"}"] {
                events.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": part}}),
                ));
            }
        }
        None => {
            events.push(event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
            ));
            for piece in pieces(&r.text, &fault) {
                events.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": piece}}),
                ));
            }
        }
    }
    events.push(event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(event("message_delta", json!({"type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": r.output_tokens}})));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    event_stream(state, events, fault)
}
