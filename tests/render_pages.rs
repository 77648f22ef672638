//! For the renderer's tests: the local pages they render (on 127.0.0.1:0,
//! allow-listed explicitly), a "secret" server that no render may reach
//! (it counts every connection), a resolver that sends one name to
//! loopback, a spike server with the render plugin, and ways to read what
//! comes back (PNG pixels, PDF text through poppler's tools).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Redirect};
use axum::routing::get;
use futures::future::BoxFuture;
use spike::ServerConfig;
use spike::caps::outbound::{Resolver, SystemResolver};

use crate::*;

/// The name `RebindingResolver` sends to 127.0.0.1.
pub const INTERNAL_NAME: &str = "internal.example";

/// The render plugin as `plugins/render.toml` grants it, without the
/// route's rate limit.
pub const RENDER: Plugin = Plugin {
    name: "render",
    guest: "render",
    manifest: "[[routes]]\nprefix = \"/render\"\nmethods = [\"GET\", \"POST\"]\n\
               [grants]\nrender = true\nblob = [\"renders\"]\n\
               [limits]\nmemory_mib = 256\nmax_body_mib = 6\ntimeout_ms = 45000\n",
};

/// The test pages and what they saw.
#[derive(Clone)]
pub struct Pages {
    pub addr: SocketAddr,
    /// Requests of `/counted`.
    pub counted: Arc<AtomicUsize>,
    /// The `Cookie` header of each request of `/cookies/show`.
    pub cookies_seen: Arc<Mutex<Vec<String>>>,
}

impl Pages {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Connections the secret server accepted: every test ends by checking
/// that it is still 0.
#[derive(Clone)]
pub struct Secret {
    pub port: u16,
    pub connections: Arc<AtomicUsize>,
}

/// A box at (10, 20), 50 by 40 CSS pixels, in pure red on white.
const BOX_PAGE: &str = r#"<!doctype html><html><body style="margin:0;background:#fff">
<div id="box" style="position:absolute;left:10px;top:20px;width:50px;height:40px;background:rgb(255,0,0)"></div>
</body></html>"#;

/// Three printed pages, each with its chapter's name.
const BOOK: &str = r#"<!doctype html><html><body>
<h1 style="break-after:page">Chapter one</h1>
<h1 style="break-after:page">Chapter two</h1>
<h1>Chapter three</h1></body></html>"#;

/// Content that arrives after `load`: an element at 300 ms, and text
/// fetched once loaded.
const LATE: &str = r#"<!doctype html><html><body><p id="first">first</p>
<script>
setTimeout(() => { const p = document.createElement('p'); p.id = 'late'; p.textContent = 'late'; document.body.append(p); }, 300);
addEventListener('load', () => fetch('/slow-json').then(r => r.text()).then(t => { const p = document.createElement('p'); p.textContent = t; document.body.append(p); }));
</script></body></html>"#;

/// Sets a cookie (by header and by script) and local storage.
const SET_COOKIES: &str = r#"<!doctype html><html><body>
<script>document.cookie = 'script_cookie=leaked; path=/'; localStorage.setItem('k', 'leaked');</script>
set</body></html>"#;

/// Shows what cookies and storage the page has.
const SHOW_COOKIES: &str = r#"<!doctype html><html><body><p id="out"></p>
<script>document.getElementById('out').textContent = 'cookie=[' + document.cookie + '] storage=[' + localStorage.getItem('k') + ']';</script>
</body></html>"#;

pub async fn start_pages(secret: &Secret) -> Pages {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pages = Pages {
        addr: listener.local_addr().unwrap(),
        counted: Arc::default(),
        cookies_seen: Arc::default(),
    };
    let secret_url = format!("http://127.0.0.1:{}", secret.port);
    let rebound_url = format!("https://{INTERNAL_NAME}:{}", secret.port);
    let sub = format!(
        r#"<!doctype html><html><body><p>sub-requests</p>
<img src="{secret_url}/img.png"><img src="{rebound_url}/img.png">
<script>fetch('{secret_url}/api').catch(() => {{}});</script></body></html>"#
    );
    let landing = format!("{secret_url}/landing");
    let tall = r#"<!doctype html><html><body style="margin:0"><div style="height:3000px;background:linear-gradient(#00f,#0f0)">tall</div></body></html>"#;
    let app = Router::new()
        .route("/box", get(|| async { Html(BOX_PAGE) }))
        .route("/tall", get(move || async move { Html(tall) }))
        .route("/book", get(|| async { Html(BOOK) }))
        .route("/late", get(|| async { Html(LATE) }))
        .route(
            "/slow-json",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "fetched-after-load"
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Html("<p>slow</p>")
            }),
        )
        // An image that never arrives: the page's `load` never fires.
        .route(
            "/never",
            get(|| async { Html(r#"<p>waiting</p><img src="/hang">"#) }),
        )
        .route("/hang", get(futures::future::pending::<&'static str>))
        .route(
            "/counted",
            get(|State(p): State<Pages>| async move {
                let n = p.counted.fetch_add(1, Ordering::SeqCst) + 1;
                Html(format!("<p>visit {n}</p>"))
            }),
        )
        .route(
            "/cookies/set",
            get(|| async {
                (
                    [(header::SET_COOKIE, "header_cookie=leaked; Path=/")],
                    Html(SET_COOKIES),
                )
            }),
        )
        .route(
            "/cookies/show",
            get(|State(p): State<Pages>, headers: HeaderMap| async move {
                let cookie = headers
                    .get(header::COOKIE)
                    .and_then(|c| c.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                p.cookies_seen.lock().unwrap().push(cookie);
                Html(SHOW_COOKIES)
            }),
        )
        .route(
            "/redirect",
            get(move || async move { Redirect::temporary(&landing).into_response() }),
        )
        .route("/sub", get(move || async move { Html(sub) }))
        .with_state(pages.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    pages
}

/// A server no render may reach: it counts connections and answers with a
/// secret.
pub async fn start_secret() -> Secret {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let secret = Secret {
        port: listener.local_addr().unwrap().port(),
        connections: Arc::default(),
    };
    let connections = secret.connections.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut socket, _)) = listener.accept().await {
            connections.fetch_add(1, Ordering::SeqCst);
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\nTOP-SECRET-42")
                .await;
        }
    });
    secret
}

/// Resolves `INTERNAL_NAME` to 127.0.0.1 (as a hostile DNS server would)
/// and everything else as the system does.
#[derive(Debug)]
pub struct RebindingResolver;

impl Resolver for RebindingResolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, std::io::Result<Vec<IpAddr>>> {
        if host.eq_ignore_ascii_case(INTERNAL_NAME) {
            return Box::pin(async { Ok(vec![IpAddr::from([127, 0, 0, 1])]) });
        }
        SystemResolver.lookup(host, port)
    }
}

/// A spike with the render plugin whose pages may reach `pages` (and
/// nothing else internal), `configure` applied on top.
pub async fn start_renderer(
    pages: &Pages,
    configure: impl FnOnce(&mut ServerConfig),
) -> TestServer {
    let allow = format!("127.0.0.1:{}", pages.addr.port()).parse().unwrap();
    TestServer::start_with(&[RENDER], move |config| {
        config.render.allow = vec![allow];
        config.resolver = Arc::new(RebindingResolver);
        configure(config);
    })
    .await
}

/// A render's answer.
pub struct Rendered {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Rendered {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, self.text()))
    }
}

/// `GET` of a render route with a query string.
pub async fn render_get(server: &TestServer, path_and_query: &str) -> Rendered {
    rendered(client().get(server.at(path_and_query))).await
}

/// `POST` of a JSON request to a render route.
pub async fn render_post(server: &TestServer, path: &str, json: serde_json::Value) -> Rendered {
    rendered(client().post(server.at(path)).json(&json)).await
}

async fn rendered(request: reqwest::RequestBuilder) -> Rendered {
    let response = within(request.send()).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = within(response.bytes()).await.unwrap().to_vec();
    Rendered {
        status,
        headers,
        body,
    }
}

/// A PNG's width, height and RGBA pixels.
pub fn decode_png(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::ALPHA);
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).expect("a frame");
    assert_eq!(info.color_type, png::ColorType::Rgba);
    pixels.truncate(info.buffer_size());
    (info.width, info.height, pixels)
}

/// The RGB of the pixel at (x, y).
pub fn pixel(image: &(u32, u32, Vec<u8>), x: u32, y: u32) -> [u8; 3] {
    let i = ((y * image.0 + x) * 4) as usize;
    [image.2[i], image.2[i + 1], image.2[i + 2]]
}

/// A PDF's page count and text, by poppler's `pdfinfo` and `pdftotext`
/// (Debian's poppler-utils, which scripts/setup.sh installs).
pub fn pdf_facts(pdf: &[u8]) -> (u32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("render.pdf");
    std::fs::write(&path, pdf).unwrap();
    let run = |tool: &str, args: &[&str]| {
        let out = std::process::Command::new(tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("{tool} (poppler-utils; scripts/setup.sh installs it): {e}")
            });
        assert!(
            out.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let path = path.to_str().unwrap();
    let info = run("pdfinfo", &[path]);
    let text = run("pdftotext", &["-layout", path, "-"]);
    let pages = info
        .lines()
        .find_map(|l| l.strip_prefix("Pages:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("pdfinfo gives the page count");
    (pages, text, info)
}

/// The process ids of the main Chromium processes started for the server
/// whose data folder is `data_dir` (its profiles live there).
pub fn chromium_pids(data_dir: &std::path::Path) -> Vec<i32> {
    let marker = format!("--user-data-dir={}", data_dir.join("render").display());
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let main = !args.iter().any(|a| a.starts_with("--type="));
        if main && args.iter().any(|a| a.starts_with(&marker)) {
            pids.push(pid);
        }
    }
    pids
}
