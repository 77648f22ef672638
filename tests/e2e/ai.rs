//! The AI routing component (`components/ai`) in front of the fake
//! provider (`fake_ai`): the official SDKs through every route and across
//! formats, bad input, retries and their timing, the breaker, fallback, the
//! deadline, the cache, quotas, streams that stall, break or lose their
//! client, audio uploads, Replicate, and keys that must never leak.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spike::caps::secrets::SecretSource;
use spike_e2e::fake_ai::{ANTHROPIC_KEY, FakeAi, Fault, OPENAI_KEY};
use spike_e2e::*;

/// The two providers of the fake, OpenAI's side with `openai_extra` added
/// to its entry.
fn providers(fake: &FakeAi, openai_extra: &str) -> String {
    let base = fake.base_url();
    format!(
        r#"[{{"name": "openai", "kind": "openai", "base_url": "{base}", "models": ["gpt-*", "whisper-1"], "api_key_secret": "openai-api-key"{openai_extra}}},
           {{"name": "anthropic", "kind": "anthropic", "base_url": "{base}", "models": ["claude-sonnet", "claude-*"], "api_key_secret": "anthropic-api-key"}}]"#
    )
}

fn manifest(fake: &FakeAi, providers: &str, extra: &str) -> String {
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

fn secrets() -> SecretSource {
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

async fn start_with(fake: &FakeAi, openai_extra: &str, extra_env: &str) -> TestServer {
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

async fn start(fake: &FakeAi) -> TestServer {
    start_with(fake, "", "").await
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

async fn post(server: &TestServer, path: &str, body: &Value) -> reqwest::Response {
    within(client().post(server.at(path)).json(body).send())
        .await
        .unwrap()
}

async fn post_json(
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

/// Every line the SDK script printed, by case name.
async fn run_sdk_cases(server: &TestServer) -> std::collections::HashMap<String, Value> {
    let output = within_for(
        Duration::from_secs(120),
        tokio::process::Command::new("node")
            .arg(node::node_dir().join("ai-sdk.mjs"))
            .arg(&server.url)
            .output(),
    )
    .await
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            (v["name"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

#[tokio::test]
async fn the_official_sdks_work_through_every_route_and_across_formats() {
    let fake = FakeAi::start().await;
    let server = start(&fake).await;
    let cases = run_sdk_cases(&server).await;
    let value = |name: &str| {
        let case = &cases[name];
        assert!(case.get("error").is_none(), "{name}: {case}");
        case["value"].clone()
    };
    for model_pair in ["openai", "openai to anthropic"] {
        let plain = value(&format!("{model_pair} plain"));
        assert_eq!(plain["content"], "echo: hello there", "{model_pair}");
        assert_eq!(plain["finish"], "stop");
        assert!(
            plain["usage"]["total_tokens"].as_u64().unwrap() > 0,
            "{plain}"
        );
        let stream = value(&format!("{model_pair} stream"));
        assert_eq!(stream["text"], "echo: stream me this", "{model_pair}");
        assert_eq!(stream["finish"], "stop");
        assert!(
            stream["usage"]["completion_tokens"].as_u64().unwrap() > 0,
            "{stream}"
        );
        assert!(stream["chunks"].as_u64().unwrap() >= 4, "{stream}");
        let tools = value(&format!("{model_pair} tools"));
        assert_eq!(tools["finish"], "tool_calls");
        assert_eq!(tools["name"], "weather");
        assert_eq!(tools["args"], json!({"city": "Oslo"}));
        assert_eq!(tools["answer"], "the tool said: rain", "{model_pair}");
        let stream_tools = value(&format!("{model_pair} stream tools"));
        assert_eq!(stream_tools["name"], "weather");
        assert_eq!(stream_tools["args"], json!({"city": "Oslo"}));
        assert_eq!(stream_tools["finish"], "tool_calls");
    }
    for model_pair in ["anthropic", "anthropic to openai"] {
        let plain = value(&format!("{model_pair} plain"));
        assert_eq!(plain["text"], "echo: hello there", "{model_pair}");
        assert_eq!(plain["stop"], "end_turn");
        assert_eq!(plain["type"], "message");
        assert!(plain["usage"]["output_tokens"].as_u64().unwrap() > 0);
        let stream = value(&format!("{model_pair} stream"));
        assert_eq!(stream["text"], "echo: stream me this", "{model_pair}");
        assert_eq!(stream["stop"], "end_turn");
        assert!(stream["deltas"].as_u64().unwrap() >= 2, "{stream}");
        assert!(
            stream["usage"]["output_tokens"].as_u64().unwrap() > 0,
            "{stream}"
        );
        let tools = value(&format!("{model_pair} tools"));
        assert_eq!(tools["stop"], "tool_use");
        assert_eq!(tools["input"], json!({"city": "Oslo"}));
        assert_eq!(tools["answer"], "the tool said: rain", "{model_pair}");
        let stream_tools = value(&format!("{model_pair} stream tools"));
        assert_eq!(
            stream_tools["input"],
            json!({"city": "Oslo"}),
            "{model_pair}"
        );
        assert_eq!(stream_tools["stop"], "tool_use");
    }
    for name in ["openai unknown model", "anthropic unknown model"] {
        let e = &cases[name]["error"];
        assert_eq!(e["status"], 404, "{name}: {}", cases[name]);
        assert_eq!(e["type"], "NotFoundError", "{name}");
    }
    assert_eq!(
        value("openai models"),
        json!(["whisper-1", "claude-sonnet"])
    );
    assert_eq!(
        value("anthropic models"),
        json!(["whisper-1", "claude-sonnet"])
    );

    // Upstream, each call went out in its provider's format with the
    // configured key, never the caller's.
    let requests = fake.state.requests();
    assert!(requests.len() >= 20, "{}", requests.len());
    for r in &requests {
        let auth = r.header("authorization").or(r.header("x-api-key")).unwrap();
        assert!(
            auth.ends_with(OPENAI_KEY) || auth == ANTHROPIC_KEY,
            "{auth}"
        );
    }
    let translated = requests
        .iter()
        .find(|r| r.path == "/v1/messages" && r.json()["system"] == "Be brief.")
        .expect("an OpenAI call with a system message reached the Anthropic side");
    assert_eq!(translated.json()["max_tokens"], 4096);
}

#[tokio::test]
async fn bad_input_gets_a_4xx_in_the_callers_own_shape() {
    let fake = FakeAi::start().await;
    let server = start(&fake).await;
    let send = |path: &'static str, body: &'static str| {
        let req = client()
            .post(server.at(path))
            .header("content-type", "application/json")
            .body(body);
        async move { send_json(req).await }
    };
    let (status, body) = send("/v1/chat/completions", "{not json").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    let (status, body) = send("/v1/messages", "{not json").await;
    assert_eq!(status, 400);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let (status, body) = send("/v1/chat/completions", r#"{"messages": []}"#).await;
    assert_eq!(
        (status, body["error"]["message"].as_str()),
        (400, Some("you must provide a model parameter"))
    );
    let (status, body) = send("/v1/messages", r#"{"model": "claude-x", "messages": []}"#).await;
    assert_eq!(
        (status, body["error"]["message"].as_str()),
        (400, Some("max_tokens: Field required"))
    );
    let (status, body) = send("/v1/chat/completions", r#"{"model": "gpt-4o"}"#).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = send("/v1/chat/completions", r#"[1, 2]"#).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = send("/summarize", r#"{"txt": "x"}"#).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = send("/v1/nothing", "{}").await;
    assert_eq!(status, 404, "{body}");
    // An upstream that talks garbage: a clean 502.
    fake.state.push_faults([Fault::Garbage]);
    let (status, body, _) = post_json(&server, "/v1/chat/completions", &chat("gpt-4o", "hi")).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not JSON")
    );
    assert_eq!(
        fake.state.requests().len(),
        1,
        "only the garbage call reached the provider"
    );
}

#[tokio::test]
async fn a_missing_key_is_a_503_that_names_the_secret() {
    let fake = FakeAi::start().await;
    let manifest = manifest(&fake, &providers(&fake, ""), "");
    let server = TestServer::start(&[Plugin {
        name: "ai",
        guest: "ai",
        manifest: &manifest,
    }])
    .await;
    let (status, body, _) = post_json(&server, "/openai", &chat("gpt-4o", "hi")).await;
    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("'openai-api-key'") && message.contains("SPIKE_SECRET_OPENAI_API_KEY"),
        "{message}"
    );
    assert!(fake.state.requests().is_empty());
}

#[tokio::test]
async fn retries_back_off_and_honour_retry_after() {
    let fake = FakeAi::start().await;
    let server = start(&fake).await;
    // Two 503s, then an answer: three tries, spaced by the backoff
    // (100 ms base, doubling, jitter in the upper half).
    fake.state.push_faults([
        Fault::Status {
            status: 503,
            retry_after: None,
        },
        Fault::Status {
            status: 502,
            retry_after: None,
        },
    ]);
    let (status, body, _) = post_json(&server, "/openai", &chat("gpt-4o", "hi")).await;
    assert_eq!(status, 200, "{body}");
    let at: Vec<Instant> = fake.state.requests().iter().map(|r| r.at).collect();
    assert_eq!(at.len(), 3);
    let gaps = [at[1] - at[0], at[2] - at[1]];
    assert!(
        gaps[0] >= Duration::from_millis(50) && gaps[0] < Duration::from_millis(400),
        "{gaps:?}"
    );
    assert!(
        gaps[1] >= Duration::from_millis(100) && gaps[1] < Duration::from_millis(600),
        "{gaps:?}"
    );

    // A 429 with Retry-After: 1 is tried again after a second.
    fake.state.clear();
    fake.state.push_faults([Fault::Status {
        status: 429,
        retry_after: Some("1"),
    }]);
    let (status, _, _) = post_json(
        &server,
        "/anthropic",
        &json!({"model": "claude-x", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let at: Vec<Instant> = fake.state.requests().iter().map(|r| r.at).collect();
    assert_eq!(at.len(), 2);
    assert!(
        at[1] - at[0] >= Duration::from_millis(990),
        "{:?}",
        at[1] - at[0]
    );

    // A wait longer than the longest allowed: the 429 is passed on, in the
    // caller's shape, with its Retry-After.
    fake.state.clear();
    fake.state.push_faults([Fault::Status {
        status: 429,
        retry_after: Some("120"),
    }]);
    let (status, body, headers) = post_json(
        &server,
        "/v1/messages",
        &json!({"model": "claude-x", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(headers["retry-after"], "120");
    assert_eq!(fake.state.requests().len(), 1);

    // Retries are bounded: three 500s in a row are the caller's 500.
    fake.state.clear();
    fake.state.push_faults((0..3).map(|_| Fault::Status {
        status: 500,
        retry_after: None,
    }));
    let (status, body, _) = post_json(&server, "/openai", &chat("gpt-4o", "hi")).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(fake.state.requests().len(), 3);
}

/// `/ai-logs` once it lists `n` calls: a call is logged just after its
/// answer has gone out.
async fn logs_of(server: &TestServer, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, logs) = send_json(client().get(server.at("/ai-logs"))).await;
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
async fn breaker(server: &TestServer, provider: &str) -> Value {
    let (status, logs) = send_json(client().get(server.at("/ai-logs"))).await;
    assert_eq!(status, 200);
    logs["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["provider"] == provider)
        .cloned()
        .unwrap()
}

#[tokio::test]
async fn the_breaker_opens_probes_and_closes() {
    let fake = FakeAi::start().await;
    let server = start_with(
        &fake,
        "",
        "RETRY_ATTEMPTS = \"1\"\nBREAKER_FAILURES = \"2\"\nBREAKER_COOLDOWN_MS = \"700\"",
    )
    .await;
    fake.state.push_faults((0..2).map(|_| Fault::Status {
        status: 500,
        retry_after: None,
    }));
    for _ in 0..2 {
        let (status, _, _) = post_json(&server, "/openai", &chat("gpt-4o", "hi")).await;
        assert_eq!(status, 500);
    }
    assert_eq!(breaker(&server, "openai").await["state"], "open");
    // The operator sees it through the admin API too.
    let req = client()
        .get(server.at("/_spike/kv/ai?prefix=breaker:openai:"))
        .bearer_auth(ADMIN_TOKEN);
    let (status, kv) = send_json(req).await;
    assert_eq!(status, 200, "{kv}");
    let names: Vec<&str> = kv["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["breaker:openai:failures", "breaker:openai:opened"]);
    assert_eq!(kv["keys"][0]["value"], "2");
    // Open: refused at once, without a call to the provider.
    let (status, body, headers) = post_json(&server, "/openai", &chat("gpt-4o", "hi")).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("circuit breaker is open")
    );
    assert!(headers.contains_key("retry-after"));
    assert_eq!(fake.state.requests().len(), 2);
    // The other provider is not affected.
    let (status, _, _) = post_json(
        &server,
        "/v1/messages",
        &json!({"model": "claude-x", "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(breaker(&server, "anthropic").await["state"], "closed");

    // After the cool-down: half-open; a failing probe opens it again.
    tokio::time::sleep(Duration::from_millis(750)).await;
    assert_eq!(breaker(&server, "openai").await["state"], "half-open");
    fake.state.push_faults([Fault::Status {
        status: 500,
        retry_after: None,
    }]);
    let (status, _, _) = post_json(&server, "/openai", &chat("gpt-4o", "hi")).await;
    assert_eq!(status, 500);
    assert_eq!(breaker(&server, "openai").await["state"], "open");
    // A succeeding probe closes it.
    tokio::time::sleep(Duration::from_millis(750)).await;
    let (status, _, _) = post_json(&server, "/openai", &chat("gpt-4o", "hi")).await;
    assert_eq!(status, 200);
    let state = breaker(&server, "openai").await;
    assert_eq!(state["state"], "closed");
    assert_eq!(state["consecutive_failures"], 0);
}

#[tokio::test]
async fn a_failing_provider_falls_back_to_another_model() {
    let fake = FakeAi::start().await;
    let server = start_with(
        &fake,
        r#", "fallback": "claude-fallback""#,
        "RETRY_ATTEMPTS = \"2\"",
    )
    .await;
    fake.state.push_faults((0..2).map(|_| Fault::Status {
        status: 503,
        retry_after: None,
    }));
    let (status, body, _) = post_json(&server, "/v1/chat/completions", &chat("gpt-4o", "hi")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "echo: hi");
    assert_eq!(body["model"], "claude-fallback");
    let paths: Vec<String> = fake
        .state
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        paths,
        [
            "/v1/chat/completions",
            "/v1/chat/completions",
            "/v1/messages"
        ]
    );
    let logs = logs_of(&server, 1).await;
    let call = &logs["calls"][0];
    assert_eq!(call["fallback_from"], "gpt-4o");
    assert_eq!(call["provider"], "anthropic");
    assert_eq!(call["attempts"], 3);
}

#[tokio::test]
async fn the_deadline_is_a_504() {
    let fake = FakeAi::start().await;
    let server = start_with(&fake, "", "DEADLINE_MS = \"400\"").await;
    fake.state
        .push_faults([Fault::Stall(Duration::from_secs(3))]);
    let started = Instant::now();
    let (status, body, _) = post_json(&server, "/openai", &chat("gpt-4o", "hi")).await;
    assert_eq!(status, 504, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(body["error"]["code"], "timeout");
}

#[tokio::test]
async fn deterministic_calls_are_cached() {
    let fake = FakeAi::start().await;
    let server = start(&fake).await;
    let mut request = chat("gpt-4o", "cache me");
    request["temperature"] = json!(0);
    let (s1, first, h1) = post_json(&server, "/openai", &request).await;
    let (s2, second, h2) = post_json(&server, "/openai", &request).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(
        (&h1["x-cache"], &h2["x-cache"]),
        (&"miss".parse().unwrap(), &"hit".parse().unwrap())
    );
    assert_eq!(first, second);
    assert_eq!(fake.state.requests().len(), 1);
    // Not at another temperature, nor for a stream.
    request["temperature"] = json!(0.7);
    let (_, _, h3) = post_json(&server, "/openai", &request).await;
    assert!(!h3.contains_key("x-cache"));
    assert_eq!(fake.state.requests().len(), 2);
    let logs = logs_of(&server, 3).await;
    let hits: Vec<bool> = logs["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cache_hit"].as_bool().unwrap())
        .collect();
    assert_eq!(hits, [false, true, false]);
}

#[tokio::test]
async fn quotas_answer_429_in_the_providers_shape() {
    let fake = FakeAi::start().await;
    let manifest =
        manifest(&fake, &providers(&fake, ""), "").replace("requests = 1000", "requests = 2");
    let server = TestServer::start_with(
        &[Plugin {
            name: "ai",
            guest: "ai",
            manifest: &manifest,
        }],
        |config| config.secrets = secrets(),
    )
    .await;
    for _ in 0..2 {
        let (status, _, _) = post_json(&server, "/openai", &chat("gpt-4o", "hi")).await;
        assert_eq!(status, 200);
    }
    let (status, body, headers) = post_json(&server, "/openai", &chat("gpt-4o", "hi")).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    let after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&after), "{after}");
    let (status, body, _) = post_json(
        &server,
        "/anthropic",
        &json!({"model": "claude-x", "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(fake.state.requests().len(), 2);
}

/// Reads a streamed response until it ends or `limit` passes.
async fn read_stream(resp: reqwest::Response, limit: Duration) -> String {
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

#[tokio::test]
async fn streams_that_stall_or_break_end_with_the_providers_error_event() {
    let fake = FakeAi::start().await;
    let server = start_with(&fake, "", "STREAM_IDLE_MS = \"300\"").await;
    let mut openai = chat("gpt-4o", "one two three four five");
    openai["stream"] = json!(true);
    let anthropic = json!({"model": "claude-x", "max_tokens": 50, "stream": true,
        "messages": [{"role": "user", "content": "one two three four five"}]});

    fake.state
        .push_faults([Fault::StallMidStream(2, Duration::from_secs(5))]);
    let started = Instant::now();
    let text = read_stream(
        post(&server, "/openai", &openai).await,
        Duration::from_secs(3),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let last = text.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with("data: {\"error\"") && last.contains("sent nothing for 300 ms"),
        "{text}"
    );
    assert!(!text.contains("[DONE]"));

    // Paced, so that the head and the first events leave the provider
    // before it breaks off.
    fake.state.chunk_delay_ms.store(20, Ordering::Relaxed);
    fake.state.push_faults([Fault::Cut(3)]);
    let text = read_stream(
        post(&server, "/v1/messages", &anthropic).await,
        Duration::from_secs(3),
    )
    .await;
    assert!(text.starts_with("event: message_start"), "{text}");
    let last_event = text.trim_end().rsplit("\n\n").next().unwrap();
    let error: Value = serde_json::from_str(
        last_event
            .strip_prefix("event: error\ndata: ")
            .expect(&text),
    )
    .unwrap();
    assert_eq!(
        (&error["type"], &error["error"]["type"]),
        (&json!("error"), &json!("api_error")),
        "{text}"
    );
    assert!(!text.contains("message_stop"));
    assert_eq!(
        fake.state.requests().len(),
        2,
        "a stream that broke off is not tried again"
    );

    // Translated streams too (OpenAI caller, Anthropic provider).
    let mut cross = openai.clone();
    cross["model"] = json!("claude-x");
    fake.state.push_faults([Fault::Cut(2)]);
    let text = read_stream(
        post(&server, "/openai", &cross).await,
        Duration::from_secs(3),
    )
    .await;
    assert!(
        text.trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("data: {\"error\""),
        "{text}"
    );
    let logs = logs_of(&server, 3).await;
    assert!(
        logs["calls"][0]["error"]
            .as_str()
            .unwrap()
            .contains("broke off"),
        "{logs}"
    );
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_stream() {
    let fake = FakeAi::start().await;
    fake.state.chunk_delay_ms.store(100, Ordering::Relaxed);
    let server = start(&fake).await;
    let words = vec!["word"; 100].join(" ");
    for (path, body) in [
        (
            "/openai",
            json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": words}]}),
        ),
        (
            "/openai",
            json!({"model": "claude-x", "stream": true, "messages": [{"role": "user", "content": words}]}),
        ),
    ] {
        let before = fake.state.cancelled.load(Ordering::Relaxed);
        let resp = post(&server, path, &body).await;
        assert_eq!(resp.status(), 200);
        let mut stream = resp.bytes_stream();
        use futures::StreamExt;
        within(stream.next()).await.unwrap().unwrap();
        drop(stream);
        let deadline = Instant::now() + Duration::from_secs(5);
        while fake.state.cancelled.load(Ordering::Relaxed) == before {
            assert!(
                Instant::now() < deadline,
                "the provider never saw the cancel ({path} {})",
                body["model"]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(fake.state.completed.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn audio_is_streamed_to_the_provider() {
    let fake = FakeAi::start().await;
    // 24 MiB of "audio" through a guest limited to 16 MiB of memory: it
    // cannot be holding the upload.
    let manifest = manifest(&fake, &providers(&fake, ""), "")
        .replace("max_body_mib = 64", "max_body_mib = 64\nmemory_mib = 16");
    let server = TestServer::start_with(
        &[Plugin {
            name: "ai",
            guest: "ai",
            manifest: &manifest,
        }],
        |config| config.secrets = secrets(),
    )
    .await;
    let boundary = "spikeformboundary";
    let audio = vec![7u8; 24 << 20];
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&audio);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let size = body.len();
    let req = client()
        .post(server.at("/whisper"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body);
    let (status, answer) = within_for(Duration::from_secs(60), send_json(req)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["text"], format!("heard {size} bytes"));
    // Not multipart: a clear 400.
    let req = client()
        .post(server.at("/whisper"))
        .header("content-type", "audio/wav")
        .body("x");
    let (status, answer) = send_json(req).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("multipart/form-data")
    );
}

#[tokio::test]
async fn replicate_predictions_are_polled_until_done_or_canceled() {
    let fake = FakeAi::start().await;
    let server = start_with(&fake, "", "REPLICATE_TIMEOUT_MS = \"500\"").await;
    let (status, body, _) = post_json(
        &server,
        "/replicate",
        &json!({"version": "abc123", "input": {"prompt": "a cat"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["output"][0], "https://example.com/out.png");
    let (status, body, _) = post_json(
        &server,
        "/replicate",
        &json!({"model": "owner/name", "input": {}}),
    )
    .await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("succeeded")),
        "{body}"
    );
    // One that does not finish in time is canceled: a 504.
    fake.state
        .prediction_polls
        .store(1_000_000, Ordering::Relaxed);
    let (status, body, _) = post_json(
        &server,
        "/replicate",
        &json!({"version": "abc123", "input": {}}),
    )
    .await;
    assert_eq!(status, 504, "{body}");
    assert!(
        fake.state
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/cancel"))
    );
    let (status, _, _) = post_json(&server, "/replicate", &json!({"input": {}})).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn summarize_and_the_call_log() {
    let fake = FakeAi::start().await;
    let server = start(&fake).await;
    let (status, body, _) = post_json(&server, "/summarize", &json!({"text": "a long text"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"response": "echo: a long text"}));
    let logs = logs_of(&server, 1).await;
    let call = &logs["calls"][0];
    assert_eq!(call["route"], "/summarize");
    assert_eq!(call["provider"], "openai");
    assert_eq!(call["model"], "gpt-4o");
    assert_eq!(call["status"], 200);
    assert!(call["tokens_in"].as_u64().unwrap() > 0 && call["tokens_out"].as_u64().unwrap() > 0);
    assert!(
        call.get("prompt").is_none(),
        "prompts are kept only if the operator asks"
    );
    let (status, _) = send_json(client().get(server.at("/ai-logs?limit=0"))).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn keys_never_leak() {
    let fake = FakeAi::start().await;
    let server = start_with(&fake, "", "LOG_PROMPTS = \"true\"").await;
    let mut seen = String::new();
    // A provider that echoes the key in its error, through both formats.
    for (path, model) in [
        ("/openai", "gpt-4o"),
        ("/openai", "claude-x"),
        ("/v1/messages", "claude-x"),
        ("/v1/messages", "gpt-4o"),
    ] {
        fake.state.push_faults([Fault::EchoKey]);
        let body = json!({"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
        let resp = post(&server, path, &body).await;
        assert_eq!(resp.status(), 400);
        seen += &within(resp.text()).await.unwrap();
    }
    assert!(seen.contains("[redacted]"), "{seen}");
    seen += &logs_of(&server, 4).await.to_string();
    seen += &send(client().get(server.at("/v1/models"))).await.1;
    let logs = captured_logs();
    for key in [OPENAI_KEY, ANTHROPIC_KEY] {
        assert!(!seen.contains(key), "a response holds the key");
        assert!(!logs.contains(key), "the log holds the key");
    }
    // The caller's own Authorization stays with spike unless configured.
    fake.state.clear();
    let req = client()
        .post(server.at("/openai"))
        .bearer_auth("callers-own-token")
        .json(&chat("gpt-4o", "hi"));
    assert_eq!(send(req).await.0, 200);
    assert_eq!(
        fake.state.requests()[0].header("authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );
}

#[tokio::test]
async fn the_callers_key_is_forwarded_only_when_configured() {
    let fake = FakeAi::start().await;
    let server = start_with(&fake, r#", "forward_authorization": true"#, "").await;
    let req = client()
        .post(server.at("/openai"))
        .bearer_auth(OPENAI_KEY)
        .json(&chat("gpt-4o", "hi"));
    assert_eq!(send(req).await.0, 200);
    let req = client()
        .post(server.at("/openai"))
        .bearer_auth("a-wrong-key")
        .json(&chat("gpt-4o", "hi"));
    let (status, body) = send_json(req).await;
    assert_eq!(status, 401, "{body}");
    let auths: Vec<String> = fake
        .state
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_string())
        .collect();
    assert_eq!(
        auths,
        [
            format!("Bearer {OPENAI_KEY}"),
            "Bearer a-wrong-key".to_string()
        ]
    );
    // A forwarded key echoed by the provider is blanked out too.
    fake.state.push_faults([Fault::EchoKey]);
    let req = client()
        .post(server.at("/openai"))
        .bearer_auth("the-callers-own-key-4821")
        .json(&chat("gpt-4o", "hi"));
    let (status, body) = send(req).await;
    assert_eq!(status, 400);
    assert!(
        body.contains("[redacted]") && !body.contains("the-callers-own-key-4821"),
        "{body}"
    );
    let logs = logs_of(&server, 3).await.to_string() + &captured_logs();
    assert!(!logs.contains("the-callers-own-key-4821"));
}
