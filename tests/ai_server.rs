//! The AI plugin (`components/ai`) in spike, in front of the fake provider
//! (`fake_ai`), for the AI tests: its manifest and secrets, starting it,
//! and reading what it answers.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spike::caps::secrets::SecretSource;

use crate::fake_ai::{ANTHROPIC_KEY, FakeAi, OPENAI_KEY};
use crate::*;

/// The two providers of the fake, OpenAI's side with `openai_extra` added
/// to its entry.
pub fn providers(fake: &FakeAi, openai_extra: &str) -> String {
    let base = fake.base_url();
    format!(
        r#"[{{"name": "openai", "kind": "openai", "base_url": "{base}", "models": ["gpt-*", "whisper-1"], "api_key_secret": "openai-api-key"{openai_extra}}},
           {{"name": "anthropic", "kind": "anthropic", "base_url": "{base}", "models": ["claude-sonnet", "claude-*"], "api_key_secret": "anthropic-api-key"}}]"#
    )
}

pub fn manifest(fake: &FakeAi, providers: &str, extra: &str) -> String {
    format!(
        r#"
[[routes]]
prefix = "/openai"
[[routes]]
prefix = "/anthropic"
[[routes]]
prefix = "/v1"
[[routes]]
prefix = "/summarize"
[[routes]]
prefix = "/whisper"
[[routes]]
prefix = "/replicate"
[[routes]]
prefix = "/ai-logs"
auth = "operator"
[grants]
kv = ["ai"]
outbound = ["127.0.0.1:{port}"]
secrets = ["openai-api-key", "anthropic-api-key"]
[quotas.ai]
requests = 1000
per_s = 60
[limits]
max_body_mib = 64
timeout_ms = 20000
[env]
PROVIDERS = '''{providers}'''
DEFAULT_MODEL = "gpt-4o"
QUOTA = "ai"
RETRY_BASE_MS = "100"
REPLICATE_BASE_URL = "{base}"
REPLICATE_API_KEY_SECRET = "openai-api-key"
REPLICATE_POLL_MS = "20"
{extra}
"#,
        port = fake.addr.port(),
        base = fake.base_url(),
    )
}

pub fn secrets() -> SecretSource {
    SecretSource {
        file: None,
        env: vec![
            ("SPIKE_SECRET_OPENAI_API_KEY".into(), OPENAI_KEY.into()),
            (
                "SPIKE_SECRET_ANTHROPIC_API_KEY".into(),
                ANTHROPIC_KEY.into(),
            ),
        ],
    }
}

pub async fn start_with(fake: &FakeAi, openai_extra: &str, extra_env: &str) -> TestServer {
    let manifest = manifest(fake, &providers(fake, openai_extra), extra_env);
    TestServer::start_with(
        &[Plugin {
            name: "ai",
            guest: "ai",
            manifest: &manifest,
        }],
        |config| config.secrets = secrets(),
    )
    .await
}

pub async fn start(fake: &FakeAi) -> TestServer {
    start_with(fake, "", "").await
}

pub fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

pub async fn post(server: &TestServer, path: &str, body: &Value) -> reqwest::Response {
    within(client().post(server.at(path)).json(body).send())
        .await
        .unwrap()
}

pub async fn post_json(
    server: &TestServer,
    path: &str,
    body: &Value,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let resp = post(server, path, body).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = within(resp.text()).await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, json, headers)
}

/// A `GET` of `path` as the operator (the admin token).
pub fn operator_get(server: &TestServer, path: &str) -> reqwest::RequestBuilder {
    client().get(server.at(path)).bearer_auth(ADMIN_TOKEN)
}

/// `/ai-logs` once it lists `n` calls: a call is logged just after its
/// answer has gone out.
pub async fn logs_of(server: &TestServer, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, logs) = send_json(operator_get(server, "/ai-logs")).await;
        assert_eq!(status, 200, "{logs}");
        if logs["calls"].as_array().unwrap().len() >= n {
            return logs;
        }
        assert!(
            Instant::now() < deadline,
            "{n} calls were never logged: {logs}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The breaker of `provider` as `/ai-logs` shows it.
pub async fn breaker(server: &TestServer, provider: &str) -> Value {
    let (status, logs) = send_json(operator_get(server, "/ai-logs")).await;
    assert_eq!(status, 200);
    logs["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["provider"] == provider)
        .cloned()
        .unwrap()
}

/// Reads a streamed response until it ends or `limit` passes.
pub async fn read_stream(resp: reqwest::Response, limit: Duration) -> String {
    let mut body = resp.bytes_stream();
    let mut text = Vec::new();
    let read = async {
        use futures::StreamExt;
        while let Some(Ok(chunk)) = body.next().await {
            text.extend_from_slice(&chunk);
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .expect("the stream ended in time");
    String::from_utf8(text).unwrap()
}
