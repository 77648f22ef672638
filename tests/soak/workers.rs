//! The soak's workers: each calls one service in a loop until the end and
//! counts, in the tally, what it got.

use futures::{SinkExt, StreamExt};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::*;

/// A worker's context: where, until when, and what it tells.
#[derive(Clone)]
struct Worker {
    base: String,
    started: Instant,
    until: Instant,
    tally: Shared,
    http: reqwest::Client,
}

impl Worker {
    fn running(&self) -> bool {
        Instant::now() < self.until
    }

    /// One HTTP call: its status and body, its latency noted; any failure
    /// to get an answer is an error.
    async fn call(
        &self,
        kind: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Option<(u16, bytes::Bytes)> {
        let sent = Instant::now();
        let answer = async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            Ok::<_, reqwest::Error>((status, response.bytes().await?))
        };
        let answer = tokio::time::timeout(Duration::from_secs(60), answer).await;
        let mut tally = self.tally.lock().unwrap();
        let at = self.started.elapsed().as_secs_f32();
        tally
            .latencies
            .push((at, sent.elapsed().as_secs_f32() * 1000.0));
        *tally.calls.entry(kind).or_default() += 1;
        match answer {
            Ok(Ok(answer)) => Some(answer),
            Ok(Err(e)) => {
                tally.error(format!("{kind} at {at:.1} s: {e}"));
                None
            }
            Err(_) => {
                tally.error(format!("{kind} at {at:.1} s: no answer in 60 s"));
                None
            }
        }
    }

    /// Checks an answer: `expected` status, and what `check` says of the
    /// body.
    fn expect(
        &self,
        kind: &str,
        answer: Option<(u16, bytes::Bytes)>,
        expected: &[u16],
        check: impl Fn(&[u8]) -> bool,
    ) {
        let Some((status, body)) = answer else { return };
        if !expected.contains(&status) || !check(&body) {
            let body = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            let at = self.started.elapsed().as_secs_f32();
            self.tally
                .lock()
                .unwrap()
                .error(format!("{kind} at {at:.1} s: {status} {body}"));
        }
    }
}

pub async fn start(
    spike: &SpikeProcess,
    token: &str,
    settings: &Settings,
    started: Instant,
    until: Instant,
    tally: &Shared,
) -> Vec<JoinHandle<()>> {
    let worker = Worker {
        base: spike.url.clone(),
        started,
        until,
        tally: tally.clone(),
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap(),
    };
    let mut tasks = Vec::new();
    for _ in 0..settings.http_clients {
        tasks.push(tokio::spawn(hello(worker.clone())));
    }
    tasks.push(tokio::spawn(cms(worker.clone(), token.to_string())));
    tasks.push(tokio::spawn(transpile(worker.clone())));
    tasks.push(tokio::spawn(render(worker.clone())));
    tasks.push(tokio::spawn(ai(worker.clone())));
    for m in 0..settings.members {
        let url = format!(
            "{}/chat/soak-{}",
            spike.url.replacen("http", "ws", 1),
            m / 20
        );
        tasks.push(tokio::spawn(member(worker.clone(), url)));
    }
    tasks
}

/// hello's greeting and its KV counter.
async fn hello(w: Worker) {
    while w.running() {
        let greeting = w
            .call("hello", w.http.get(format!("{}/hello", w.base)))
            .await;
        w.expect("hello", greeting, &[200], |b| {
            b.starts_with(b"Hello, world!")
        });
        let count = w
            .call("kv", w.http.post(format!("{}/hello/counter", w.base)))
            .await;
        w.expect("kv", count, &[200], |b| b.starts_with(b"{\"count\":"));
    }
}

/// CMS documents, written and read back, 50 of them over and over.
async fn cms(w: Worker, token: String) {
    for i in 0u64.. {
        if !w.running() {
            return;
        }
        let url = format!("{}/my-cms/soak/doc-{}", w.base, i % 50);
        let body = format!("document {i}\n").repeat(100);
        let put = w
            .call(
                "cms",
                w.http.put(&url).bearer_auth(&token).body(body.clone()),
            )
            .await;
        w.expect("cms put", put, &[200, 201], |_| true);
        let get = w.call("cms", w.http.get(&url).bearer_auth(&token)).await;
        w.expect("cms get", get, &[200], |b| b == body.as_bytes());
    }
}

/// A TSX module, a little different each time (no cache hit).
async fn transpile(w: Worker) {
    for i in 0u64.. {
        if !w.running() {
            return;
        }
        let source = format!(
            "import {{ useState }} from \"react\";\nexport const App = () => {{\n  const [n, setN] = useState<number>({i});\n  return <button onClick={{() => setN(n + 1)}}>{{n}}</button>;\n}};\n"
        );
        let request = w
            .http
            .post(format!("{}/transpile", w.base))
            .header("content-type", "text/plain");
        let answer = w.call("transpile", request.body(source)).await;
        w.expect("transpile", answer, &[200], |b| {
            std::str::from_utf8(b)
                .is_ok_and(|js| js.contains("useState") && !js.contains("<number>"))
        });
    }
}

/// Screenshots of inline HTML in Chromium.
async fn render(w: Worker) {
    for i in 0u64.. {
        if !w.running() {
            return;
        }
        let page = json!({"html": format!("<h1>soak {i}</h1>"), "width": 200, "height": 100, "cache": "no"});
        let request = w
            .http
            .post(format!("{}/render/screenshot", w.base))
            .json(&page);
        let answer = w.call("render", request).await;
        w.expect("render", answer, &[200], |b| b.starts_with(b"\x89PNG"));
    }
}

/// Chat completions through the AI plugin to the fake provider, ten a
/// second at most (the plugin's quota is 1,000 a minute).
async fn ai(w: Worker) {
    while w.running() {
        let chat = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "soak"}]});
        let request = w
            .http
            .post(format!("{}/v1/chat/completions", w.base))
            .json(&chat);
        let answer = w.call("ai", request).await;
        w.expect("ai", answer, &[200], |b| {
            serde_json::from_slice::<Value>(b)
                .is_ok_and(|v| v["choices"][0]["message"]["content"] == "echo: soak")
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A room member: a message a second; every event of the room counted.
async fn member(w: Worker, url: String) {
    let Ok(Ok((ws, _))) = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::connect_async(&url),
    )
    .await
    else {
        return w
            .tally
            .lock()
            .unwrap()
            .error(format!("joining {url} failed"));
    };
    let (mut send, mut receive) = ws.split();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n = 0u64;
    while w.running() {
        tokio::select! {
            _ = tick.tick() => {
                n += 1;
                if send.send(Message::text(format!("message {n}"))).await.is_err() {
                    return w.tally.lock().unwrap().error(format!("{url}: a send failed"));
                }
            }
            frame = receive.next() => match frame {
                Some(Ok(Message::Text(text))) if text.contains("\"type\":\"event\"") => {
                    w.tally.lock().unwrap().deliveries += 1;
                }
                Some(Ok(Message::Close(close))) => {
                    return w.tally.lock().unwrap().error(format!("{url}: closed {close:?}"));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return w.tally.lock().unwrap().error(format!("{url}: {e}")),
                None => return w.tally.lock().unwrap().error(format!("{url}: the socket ended")),
            },
            _ = tokio::time::sleep_until(w.until.into()) => {}
        }
    }
    let _ = send.close().await;
}
