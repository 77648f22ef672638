//! The AI plugin's resilience against the fake provider (`fake_ai`):
//! retries and their timing, the breaker, fallback, the deadline, the
//! cache, quotas, and streams that stall, break or lose their client.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spike_e2e::ai_server::*;
use spike_e2e::fake_ai::{FakeAi, Fault};
use spike_e2e::*;

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
    // The same as an HTTP date (decades away): read, and passed on.
    fake.state.clear();
    fake.state.push_faults([Fault::Status {
        status: 429,
        retry_after: Some("Fri, 01 Jan 2100 00:00:00 GMT"),
    }]);
    let (status, _, headers) = post_json(&server, "/openai", &chat("gpt-4o", "hi")).await;
    assert_eq!(status, 429);
    let after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(after > 365 * 86_400, "{after}");
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
        last.starts_with("data: {\"error\"") && last.contains("sent no whole event for 300 ms"),
        "{text}"
    );
    assert!(!text.contains("[DONE]"));

    // A provider that keeps sending a byte but never a whole event (the
    // hostile probe: one ':' every 1.5 s held a call 40 s against 4 s).
    fake.state
        .push_faults([Fault::Trickle(2, Duration::from_millis(100))]);
    let started = Instant::now();
    let text = read_stream(
        post(&server, "/openai", &openai).await,
        Duration::from_secs(3),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(text.contains("sent no whole event for 300 ms"), "{text}");

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
        3,
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
    let logs = logs_of(&server, 4).await;
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
