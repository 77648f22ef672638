//! OpenTelemetry traces, received by a real OTLP receiver (`spike_e2e::
//! otlp`) from a `spike serve` process: one request through the auth hook
//! into a plugin that calls another through a service binding, which calls
//! upstreams with and without `trace = true`; a client's `traceparent`
//! honoured or not as `--trace-context` says; sampling; a collector that
//! is down or stalls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spike_e2e::otlp::{Receiver, Span, describe};
use spike_e2e::process::SpikeProcess;
use spike_e2e::tokens::{AUTH_HS256, hs256_tokens};
use spike_e2e::*;

const HS_KEY: &str = "hs256-test-key-of-32-bytes-or-so!";
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const ERROR: i32 = 2;

/// An upstream that answers `ok` and keeps the `traceparent` of each
/// request (`None` when it had none).
struct Upstream {
    port: u16,
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

impl Upstream {
    async fn start() -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let kept = seen.clone();
        let app = axum::Router::new().fallback(move |headers: http::HeaderMap| {
            let kept = kept.clone();
            async move {
                let parent = headers
                    .get("traceparent")
                    .map(|v| v.to_str().unwrap().to_string());
                kept.lock().unwrap().push(parent);
                "ok"
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { port, seen }
    }

    fn seen(&self) -> Vec<Option<String>> {
        self.seen.lock().unwrap().clone()
    }
}

/// The plugins: `front` (the fetch fixture behind the auth hook, which
/// may call `middle` and `probe`), `middle` (the fetch fixture, which may
/// call `traced` with the trace context and `untraced` without), `probe`
/// (KV), and the auth plugin.
fn plugins(traced: u16, untraced: u16) -> Vec<Plugin<'static>> {
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    vec![
        spike_e2e::rooms::ROOMS,
        AUTH_HS256,
        Plugin {
            name: "front",
            guest: "fixture_fetch",
            manifest: "[[routes]]\nprefix = \"/front\"\nauth = \"required\"\n\
                       [grants]\nservices = [\"middle\", \"probe\"]\n",
        },
        Plugin {
            name: "middle",
            guest: "fixture_fetch",
            manifest: leak(format!(
                "[[routes]]\nprefix = \"/middle\"\n[grants]\noutbound = [\
                 {{ host = \"127.0.0.1:{traced}\", trace = true }}, \"127.0.0.1:{untraced}\"]\n"
            )),
        },
        Plugin {
            name: "probe",
            guest: "fixture_probe",
            manifest: "[[routes]]\nprefix = \"/probe\"\n[grants]\nkv = [\"probe\"]\n",
        },
        Plugin {
            name: "transpile",
            guest: "transpile",
            manifest: "[[routes]]\nprefix = \"/transpile\"\n[grants]\nkv = [\"transpile\"]\n\
                       [limits]\ncpu_ms = 2000\nmemory_mib = 512\n",
        },
    ]
}

/// A spike process with `plugins`, sending traces to `receiver` over
/// `protocol`, with `extra` flags.
async fn traced_spike(
    dir: &std::path::Path,
    plugins: &[Plugin<'_>],
    endpoint: &str,
    protocol: &str,
    extra: &[&str],
) -> SpikeProcess {
    write_plugins(&dir.join("plugins"), plugins);
    let mut spike = SpikeProcess::new(
        "traced",
        &dir.join("plugins"),
        &dir.join("data"),
        dir.join("spike.log"),
        extra,
    )
    .env("SPIKE_SECRET_HS_KEY", HS_KEY)
    .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    .env("OTEL_BSP_SCHEDULE_DELAY", "50")
    .env("OTEL_METRIC_EXPORT_INTERVAL", "200")
    .env("OTEL_SERVICE_NAME", "spike-under-test")
    .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test");
    spike.spawn();
    spike.wait_ready().await;
    spike
}

/// `front` calling `inner` (a path of `front`'s own service calls), with
/// `token`; the status, body and the request id.
async fn through_front(spike: &SpikeProcess, token: &str, inner: &str) -> (u16, String, String) {
    let (authority, path) = inner.split_once('/').unwrap();
    let url = spike.at(&format!(
        "/front?authority={authority}&path={}",
        url_encode(&format!("/{path}"))
    ));
    let resp = within(client().get(url).bearer_auth(token).send())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    (status, within(resp.text()).await.unwrap(), id)
}

/// The spans of one trace, by span id.
fn by_id(spans: &[Span], trace: &str) -> HashMap<String, Span> {
    (spans.iter())
        .filter(|s| s.trace_id == trace)
        .map(|s| (s.span_id.clone(), s.clone()))
        .collect()
}

/// The one span of `trace` named `name` whose parent is `parent`.
fn child<'a>(trace: &'a HashMap<String, Span>, parent: &Span, name: &str) -> &'a Span {
    let found: Vec<&Span> = (trace.values())
        .filter(|s| s.parent == parent.span_id && s.name == name)
        .collect();
    let all: Vec<Span> = trace.values().cloned().collect();
    assert_eq!(
        found.len(),
        1,
        "one '{name}' under '{}' expected:\n{}",
        parent.name,
        describe(&all)
    );
    found[0]
}

/// `GET /probe/count` with a client's sampled `traceparent` of `trace`
/// (its span `00f067aa0ba902b7`).
async fn with_traceparent(spike: &SpikeProcess, trace: &str) -> reqwest::Response {
    let parent = format!("00-{trace}-00f067aa0ba902b7-01");
    let request = client()
        .get(spike.at("/probe/count"))
        .header("traceparent", parent);
    within(request.send()).await.unwrap()
}

/// The server span of the request `id`.
fn server_span<'a>(spans: &'a [Span], id: &str) -> Option<&'a Span> {
    (spans.iter()).find(|s| s.kind == SERVER && s.attr("spike.request_id") == Some(id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_request_through_auth_plugins_and_upstreams() {
    let receiver = Receiver::http().await;
    let (traced, untraced) = (Upstream::start().await, Upstream::start().await);
    let dir = tempfile::tempdir().unwrap();
    let spike = traced_spike(
        dir.path(),
        &plugins(traced.port, untraced.port),
        &receiver.url,
        "http/protobuf",
        &["--trace-context", "always", "--log-format", "json"],
    )
    .await;
    let token = &hs256_tokens(HS_KEY, &["user_1"])[0];

    // front -> middle -> the upstream granted `trace = true`.
    let inner = format!(
        "middle.spike.internal/middle?authority=127.0.0.1:{}&path=/x",
        traced.port
    );
    let (status, body, id) = through_front(&spike, token, &inner).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "upstream 200: upstream 200: ok")
    );
    let seen = traced.seen();
    assert_eq!(seen.len(), 1);
    let parent = seen[0]
        .clone()
        .expect("the traced upstream got a traceparent");
    let parts: Vec<&str> = parent.split('-').collect();
    let (trace_id, outbound_id) = (parts[1].to_string(), parts[2].to_string());
    assert_eq!((parts[0], parts[3]), ("00", "01"), "{parent}");

    let spans = receiver
        .wait_for(Duration::from_secs(20), |spans| {
            by_id(spans, &trace_id).contains_key(&outbound_id) && server_span(spans, &id).is_some()
        })
        .await;
    let trace = by_id(&spans, &trace_id);
    let root = server_span(&spans, &id).unwrap();
    assert_eq!(root.trace_id, trace_id, "one trace for the whole request");
    assert_eq!(root.parent, "", "the server span is the root");
    assert_eq!(root.name, "GET /front");
    assert_eq!(root.attr("http.request.method"), Some("GET"));
    assert_eq!(root.attr("http.route"), Some("/front"));
    assert_eq!(root.attr("http.response.status_code"), Some("200"));
    assert_eq!(root.attr("spike.plugin"), Some("front"));
    assert_eq!(
        root.resource.get("service.name").map(String::as_str),
        Some("spike-under-test")
    );
    assert_eq!(
        root.resource
            .get("deployment.environment")
            .map(String::as_str),
        Some("test")
    );
    // The gate: the auth hook (a cache miss: the first use of the token)
    // and the authenticator's own guest call.
    let gate = child(&trace, root, "gate");
    assert_eq!(gate.attr("spike.auth"), Some("verified"));
    let auth = child(&trace, gate, "auth");
    assert_eq!(auth.attr("spike.auth.cache"), Some("miss"));
    let auth_call = child(&trace, auth, "guest call");
    assert_eq!(auth_call.attr("spike.plugin"), Some("auth"));
    assert_eq!(auth_call.attr("spike.export"), Some("authenticate"));
    // front's guest call, its service call, and middle's guest call in
    // the same trace under it.
    let front = child(&trace, root, "guest call");
    assert_eq!(front.attr("spike.plugin"), Some("front"));
    assert!(
        front
            .attr("spike.plugin.version")
            .is_some_and(|v| v.len() == 12)
    );
    assert_eq!(front.attr("spike.instance"), Some("fresh"));
    let call = child(&trace, front, "call middle");
    assert_eq!(call.kind, CLIENT);
    let middle = child(&trace, call, "guest call");
    assert_eq!(middle.attr("spike.plugin"), Some("middle"));
    // The outgoing request: a client span, whose id the upstream saw.
    let outbound = child(&trace, middle, "GET");
    assert_eq!(outbound.span_id, outbound_id);
    assert_eq!(outbound.kind, CLIENT);
    assert_eq!(outbound.attr("server.address"), Some("127.0.0.1"));
    assert_eq!(outbound.attr("http.response.status_code"), Some("200"));
    assert!(
        outbound.attr("url.full").is_some_and(|u| u.ends_with("/x")),
        "{outbound:?}"
    );

    // The same path to the upstream without `trace = true`: no context
    // leaves; and the token is now cached.
    let inner = format!(
        "middle.spike.internal/middle?authority=127.0.0.1:{}&path=/y",
        untraced.port
    );
    let (status, _, id) = through_front(&spike, token, &inner).await;
    assert_eq!(status, 200);
    assert_eq!(
        untraced.seen(),
        vec![None],
        "no traceparent without the grant's trace = true"
    );
    let spans = receiver
        .wait_for(Duration::from_secs(20), |spans| {
            server_span(spans, &id).is_some()
        })
        .await;
    let root = server_span(&spans, &id).unwrap();
    let trace = by_id(&spans, &root.trace_id);
    let auth = child(&trace, child(&trace, root, "gate"), "auth");
    assert_eq!(auth.attr("spike.auth.cache"), Some("hit"));

    // A capability call: KV, through a service call to probe; its
    // namespace and outcome, never the key.
    let (status, _, id) =
        through_front(&spike, token, "probe.spike.internal/probe/kv/secret-key").await;
    assert_eq!(status, 200);
    let spans = receiver
        .wait_for(Duration::from_secs(20), |spans| {
            server_span(spans, &id).is_some_and(|root| {
                spans
                    .iter()
                    .any(|s| s.trace_id == root.trace_id && s.name == "kv get")
            })
        })
        .await;
    let root = server_span(&spans, &id).unwrap();
    let trace = by_id(&spans, &root.trace_id);
    let probe = child(
        &trace,
        child(&trace, child(&trace, root, "guest call"), "call probe"),
        "guest call",
    );
    let kv = child(&trace, probe, "kv get");
    assert_eq!(kv.attr("spike.resource"), Some("probe"));
    assert_eq!(kv.attr("spike.bytes"), Some("0"));
    assert!(
        !format!("{spans:?}").contains("secret-key"),
        "a key never reaches a span"
    );

    // A client's traceparent is honoured (`--trace-context always`).
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let resp = with_traceparent(&spike, client_trace).await;
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let spans = receiver
        .wait_for(Duration::from_secs(20), |spans| {
            server_span(spans, &id).is_some()
        })
        .await;
    let root = server_span(&spans, &id).unwrap();
    assert_eq!(root.trace_id, client_trace);
    assert_eq!(root.parent, "00f067aa0ba902b7");

    // A guest that traps: its guest call span says so, and so does the
    // server span of the 500.
    let resp = within(client().get(spike.at("/probe/trap")).send())
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let spans = receiver
        .wait_for(Duration::from_secs(20), |spans| {
            server_span(spans, &id).is_some()
        })
        .await;
    let root = server_span(&spans, &id).unwrap();
    assert_eq!(root.status, ERROR);
    let trace = by_id(&spans, &root.trace_id);
    let call = child(&trace, root, "guest call");
    assert_eq!(
        (call.status, call.attr("error.type")),
        (ERROR, Some("trap"))
    );
    // The warning logged inside it names its trace (JSON log lines).
    let logged = format!("\"trace_id\":\"{}\"", root.trace_id);
    assert!(
        spike
            .log()
            .lines()
            .any(|l| l.contains(&logged) && l.contains("trap")),
        "{}",
        spike.log()
    );

    // A room: the join is a span of the upgrade request's trace; each
    // message a trace of its own from arrival to broadcast, linked to
    // the join.
    let url = spike_e2e::rooms::ws_url(&spike.url, "/chat/traced");
    let mut member = spike_e2e::rooms::RoomClient::join(&url).await;
    member.send("hello").await;
    assert_eq!(member.next_event().await["data"], "hello");
    let spans = receiver
        .wait_for(Duration::from_secs(20), |spans| {
            spans.iter().any(|s| s.name == "room message")
                && spans.iter().any(|s| s.name == "room join")
        })
        .await;
    let join = spans.iter().find(|s| s.name == "room join").unwrap();
    let upgrade = spans.iter().find(|s| s.span_id == join.parent).unwrap();
    assert_eq!((upgrade.kind, upgrade.name.as_str()), (SERVER, "GET /chat"));
    let message = spans.iter().find(|s| s.name == "room message").unwrap();
    assert_eq!(message.parent, "", "a message starts a trace of its own");
    assert_eq!(
        message.links,
        vec![(join.trace_id.clone(), join.span_id.clone())]
    );
    assert_eq!(message.attr("spike.room"), Some("rooms/chat/traced"));
    assert_eq!(message.events, vec!["stored and broadcast".to_string()]);
    member.close().await;

    // A plugin's own telemetry (the SDK's, through wasi:otel): its span
    // under its guest call, its metrics in /metrics with its label.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let req = client()
            .post(spike.at("/transpile"))
            .header("content-type", "text/plain")
            .body("export const a: number = 1;");
        let resp = within(req.send()).await.unwrap();
        assert_eq!(resp.status(), 200);
        ids.push(resp.headers()["x-request-id"].to_str().unwrap().to_string());
    }
    let spans = receiver
        .wait_for(Duration::from_secs(20), |spans| {
            ids.iter().all(|id| server_span(spans, id).is_some())
                && spans.iter().filter(|s| s.name == "transpile").count() == 2
        })
        .await;
    for (id, cache) in ids.iter().zip(["miss", "hit"]) {
        let root = server_span(&spans, id).unwrap();
        let trace = by_id(&spans, &root.trace_id);
        let call = child(&trace, root, "guest call");
        assert!(call.attr("spike.guest_cpu_us").is_some(), "{call:?}");
        let own = child(&trace, call, "transpile");
        assert_eq!(own.attr("transpile.cache"), Some(cache));
    }
    let metrics = metrics_of(&spike).await;
    for (series, least) in [
        (
            "spike_guest_transpile_cache_total{plugin=\"transpile\",result=\"miss\"}",
            1.0,
        ),
        (
            "spike_guest_transpile_cache_total{plugin=\"transpile\",result=\"hit\"}",
            1.0,
        ),
        (
            "spike_guest_transpile_swc_seconds_count{plugin=\"transpile\"}",
            1.0,
        ),
        ("spike_plugin_cpu_seconds_total{plugin=\"transpile\"}", 1e-6),
        (
            "spike_plugin_memory_peak_bytes{plugin=\"transpile\"}",
            65536.0,
        ),
    ] {
        assert!(metric(&metrics, series) >= least, "{series}:\n{metrics}");
    }
    // Prometheus reads all of it, guests' series included, without a
    // complaint; and every series the dashboard and the alerts name is
    // one spike serves (or one a shipped plugin reports).
    promtool_lints(&metrics);
    // The same series over OTLP, with the plugin as an attribute.
    within(async {
        loop {
            let sent = receiver.metrics().into_iter().any(|(name, points)| {
                name == "guest_transpile_cache"
                    && (points.iter())
                        .any(|p| p.get("plugin").map(String::as_str) == Some("transpile"))
            });
            if sent {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    monitoring_names_exist(&metrics);
    assert!(
        receiver
            .requests()
            .iter()
            .all(|t| t == "application/x-protobuf")
    );
    drop(spike);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_sampling_and_an_untrusted_traceparent() {
    let receiver = Receiver::grpc().await;
    let dir = tempfile::tempdir().unwrap();
    let probe = Plugin {
        name: "probe",
        guest: "fixture_probe",
        manifest: "[[routes]]\nprefix = \"/probe\"\n[grants]\nkv = [\"probe\"]\n",
    };
    let spike = traced_spike(
        dir.path(),
        &[probe],
        &receiver.url,
        "grpc",
        &[
            "--traces-sampler",
            "parentbased_traceidratio",
            "--traces-sampler-arg",
            "0.25",
        ],
    )
    .await;
    // A client's sampled traceparent from an untrusted address (the
    // default is `trusted`, and no proxy is): a trace of spike's own,
    // sampled by ratio like any other.
    let requests = 400;
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    for _ in 0..requests {
        let resp = with_traceparent(&spike, client_trace).await;
        assert_eq!(resp.status(), 200);
    }
    // Spans arrive within the batch delay; wait for them to settle.
    let mut last = 0;
    let spans = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let spans = receiver.spans();
        if spans.len() == last && last > 0 {
            break spans;
        }
        last = spans.len();
    };
    let roots: Vec<&Span> = spans.iter().filter(|s| s.kind == SERVER).collect();
    // 400 requests at 25%: 100 expected, sd 8.7; 60..140 is over 4 sd.
    assert!(
        (60..140).contains(&roots.len()),
        "{} of {requests} traced at 0.25",
        roots.len()
    );
    assert!(
        roots
            .iter()
            .all(|r| r.trace_id != client_trace && r.parent.is_empty())
    );
    assert!(receiver.requests().iter().all(|t| t == "grpc"));
    drop(spike);
}

/// Runs promtool (scripts/setup.sh installs Debian's prometheus) in
/// docs/monitoring with `args`, `input` on its standard input; fails the
/// test with what it said unless it succeeds.
fn promtool(args: &[&str], input: Option<&str>) {
    use std::io::Write;
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/monitoring");
    let mut child = std::process::Command::new("promtool")
        .args(args)
        .current_dir(docs)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (scripts/setup.sh installs Debian's prometheus)");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.unwrap_or("").as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `spike_*` series that docs/monitoring's dashboard and alert
/// rules query: served in `metrics` (or registered, if it has no series
/// yet), or a `spike_guest_*` series a shipped plugin reports (its name in
/// the plugin's source).
fn monitoring_names_exist(metrics: &str) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut queried = String::new();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("docs/monitoring/grafana-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            queried.push_str(target["expr"].as_str().unwrap());
            queried.push('\n');
        }
    }
    queried.push_str(&std::fs::read_to_string(root.join("docs/monitoring/alerts.yml")).unwrap());
    let mut sources = String::new();
    for component in ["ai", "transpile", "render", "cms", "auth"] {
        let dir = root.join("components").join(component).join("src");
        for entry in std::fs::read_dir(dir).unwrap() {
            sources.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default());
        }
    }
    let mut registered = String::new();
    let mut dirs = vec![root.join("host/src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                registered.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
    }
    let mut names: Vec<&str> = queried
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("spike_"))
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() > 10, "{names:?}");
    for name in names {
        let base = ["_total", "_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        // A family with no series yet is not served: its registration
        // in the host's source names it.
        let served = metrics.lines().any(|l| l.starts_with(base))
            || base
                .strip_prefix("spike_")
                .is_some_and(|family| registered.contains(&format!("\"{family}\"")));
        let reported = base
            .strip_prefix("spike_guest_")
            .is_some_and(|guest| sources.contains(&format!("\"{guest}\"")));
        assert!(
            served || reported,
            "{name} is neither served nor reported by a shipped plugin"
        );
    }
}

/// `promtool check metrics` on `metrics`: no complaint but one. promtool
/// 2.42 (Debian's) reads the classic text format, where a counter's HELP
/// names the series `_total`; OpenMetrics (what spike serves) names the
/// family, so it reports every counter as without help.
fn promtool_lints(metrics: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (scripts/setup.sh installs Debian's prometheus)");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(metrics.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let complaints: Vec<&str> = (said.lines())
        .filter(|l| !l.trim().is_empty() && !l.ends_with("_total no help text"))
        .collect();
    assert!(complaints.is_empty(), "promtool check metrics:\n{said}");
}

#[test]
fn the_alert_rules_load_and_fire_as_their_tests_say() {
    promtool(&["check", "rules", "alerts.yml"], None);
    promtool(&["test", "rules", "alerts.test.yml"], None);
}

/// The value of `metric` (with its labels) in `text`, 0 if absent.
fn metric(text: &str, name: &str) -> f64 {
    (text.lines())
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

async fn metrics_of(spike: &SpikeProcess) -> String {
    let resp = client()
        .get(spike.at("/_spike/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send();
    within(within(resp).await.unwrap().text()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_or_stalls_fails_no_request() {
    let probe = Plugin {
        name: "probe",
        guest: "fixture_probe",
        manifest: "[[routes]]\nprefix = \"/probe\"\n",
    };
    // Down: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let spike = traced_spike(
        dir.path(),
        std::slice::from_ref(&probe),
        &down,
        "http/protobuf",
        &[],
    )
    .await;
    for _ in 0..20 {
        let (status, _) = send(client().get(spike.at("/probe/count"))).await;
        assert_eq!(status, 200);
    }
    let failed = "spike_telemetry_spans_dropped_total{reason=\"export_failed\"}";
    within_for(Duration::from_secs(60), async {
        while metric(&metrics_of(&spike).await, failed) == 0.0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    drop(spike);

    // Stalled: the collector takes exports and never answers. The queue
    // fills, spans are dropped and counted, requests go on.
    let receiver = Receiver::http().await;
    receiver.stall();
    let dir = tempfile::tempdir().unwrap();
    write_plugins(&dir.path().join("plugins"), &[probe]);
    let mut spike = SpikeProcess::new(
        "stalled",
        &dir.path().join("plugins"),
        &dir.path().join("data"),
        dir.path().join("spike.log"),
        &[
            "--otlp-max-queue",
            "8",
            "--otlp-max-batch",
            "4",
            "--otlp-timeout",
            "60000",
        ],
    )
    .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.url);
    spike.spawn();
    spike.wait_ready().await;
    for _ in 0..200 {
        let (status, _) = send(client().get(spike.at("/probe/count"))).await;
        assert_eq!(status, 200);
    }
    let text = metrics_of(&spike).await;
    let full = metric(
        &text,
        "spike_telemetry_spans_dropped_total{reason=\"queue_full\"}",
    );
    assert!(full > 0.0, "{text}");
    assert_eq!(metric(&text, "spike_telemetry_spans_exported_total"), 0.0);
    // A stop still ends promptly: the stalled export is given up.
    let status = spike.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{}", spike.log());
}
