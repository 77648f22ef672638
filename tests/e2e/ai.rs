//! The AI routing component (`components/ai`) in front of the fake
//! provider (`fake_ai`): the official SDKs through every route and across
//! formats, bad input, a missing key, audio uploads, Replicate, the call
//! log, and keys that must never leak. Resilience is in `ai_resilience.rs`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use spike_e2e::ai_server::*;
use spike_e2e::fake_ai::{ANTHROPIC_KEY, FakeAi, Fault, Leak, OPENAI_KEY};
use spike_e2e::*;

/// Every line the SDK script printed, by case name.
async fn run_sdk_cases(server: &TestServer) -> std::collections::HashMap<String, Value> {
    let url = std::ffi::OsStr::new(&server.url);
    node::run_to_end("ai-sdk.mjs", &[url], Duration::from_secs(120))
        .await
        .into_iter()
        .map(|v| (v["name"].as_str().unwrap().to_string(), v))
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
    // A body that is not JSON: where it broke, in the caller's format.
    let (status, body) = send("/summarize", r#"{"text": "#).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("the JSON body: EOF"), "{message}");
    // A path or a method no route takes: a 404 in the OpenAI shape (the
    // router's fallback), not the SDK's own error.
    let (status, body) = send("/v1/nothing", "{}").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    let (status, body) = send_json(client().delete(server.at("/openai"))).await;
    assert_eq!(status, 404, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("no AI route is DELETE /openai"), "{body}");
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
    let (status, _) = send_json(operator_get(&server, "/ai-logs?limit=0")).await;
    assert_eq!(status, 400);
    // For the operator only (the hostile probe: any signed-in user read
    // every call, and with LOG_PROMPTS every prompt).
    let (status, body) = send_json(client().get(server.at("/ai-logs"))).await;
    assert_eq!((status, error_code(&body)), (401, "unauthorized"), "{body}");
    let wrong = client()
        .get(server.at("/ai-logs"))
        .bearer_auth("a-users-token");
    assert_eq!(send_json(wrong).await.0, 401);
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
    // A provider that writes its key into a 200, as it is, in base64 or
    // percent-encoded; whole or streamed (four characters an event, so
    // that the key is split across events), passed through or translated.
    let mut leaks = 0;
    for leak in [Leak::Plain, Leak::Base64, Leak::Percent] {
        for (path, model) in [
            ("/openai", "gpt-4o"),
            ("/openai", "claude-x"),
            ("/v1/messages", "claude-x"),
            ("/v1/messages", "gpt-4o"),
        ] {
            for stream in [false, true] {
                fake.state.push_faults([Fault::LeakKey(leak)]);
                let body = json!({"model": model, "max_tokens": 5, "stream": stream,
                                  "messages": [{"role": "user", "content": "hi"}]});
                let resp = post(&server, path, &body).await;
                assert_eq!(resp.status(), 200, "{leak:?} {path} {model}");
                let text = within(resp.text()).await.unwrap();
                let joined = stream_text(&text);
                assert!(
                    joined.contains("here it is: [redacted] (keep it)")
                        || text.contains("[redacted]"),
                    "{leak:?} {path} {model} {stream}: {text}"
                );
                for key in [OPENAI_KEY, ANTHROPIC_KEY] {
                    let written = leak.text(key);
                    assert!(
                        !joined.contains(&written) && !text.contains(&written),
                        "{leak:?}: {joined}"
                    );
                }
                seen += &text;
                leaks += 1;
            }
        }
    }
    seen += &logs_of(&server, 4 + leaks).await.to_string();
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

#[tokio::test]
async fn answers_read_to_their_end_leave_the_connection_for_the_next_call() {
    let fake = FakeAi::start().await;
    let server = start(&fake).await;
    let mut streamed = chat("gpt-4o", "one two three");
    streamed["stream"] = json!(true);
    for body in [&streamed, &streamed, &chat("gpt-4o", "whole")] {
        let resp = post(&server, "/openai", body).await;
        assert_eq!(resp.status(), 200);
        within(resp.bytes()).await.unwrap();
    }
    let metrics = server.metrics_text().await;
    for (kind, n) in [("connected", 1), ("reused", 2)] {
        let line = format!("spike_outbound_requests_total{{plugin=\"ai\",kind=\"{kind}\"}} {n}");
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
}

/// The text a caller reads from an answer: a whole answer as it is, a
/// stream's text deltas (OpenAI's or Anthropic's) joined.
fn stream_text(answer: &str) -> String {
    if !answer.contains("data: ") {
        return answer.to_string();
    }
    (answer.lines())
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            (v["choices"][0]["delta"]["content"].as_str())
                .or(v["delta"]["text"].as_str())
                .map(str::to_string)
        })
        .collect()
}
