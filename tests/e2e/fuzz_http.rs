//! Fuzzing over HTTP: requests mutated from seeds (`fuzz/seeds/http-*`)
//! against the real server with its real components: tokens and cookies
//! into the auth component, sources into the transpiler, operator calls
//! into the admin API, paths and ranges into plugins and a static site.
//! Whatever arrives, the answer is never a server error (500, 502), the
//! request is never left unanswered, and the server serves on.
//!
//! `SPIKE_FUZZ_SECONDS` (2) is each target's time; `SPIKE_FUZZ_SEED`
//! repeats a run. A failing request is saved under `fuzz/artifacts/`;
//! copied into `fuzz/regressions/http-<target>/`, every run replays it.

use std::path::Path;
use std::time::{Duration, Instant};

use spike::assets::SiteConfig;
use spike_e2e::tokens::{AUTH_HS256, hs256_secret, hs256_tokens};
use spike_e2e::*;
use spike_fuzz::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HS_KEY: &str = "fuzz-hs256-key";

const TRANSPILE: Plugin = Plugin {
    name: "transpile",
    guest: "transpile",
    manifest: "[[routes]]\nprefix = \"/transpile\"\n[grants]\nkv = [\"transpile\"]\n\
               [env]\nMAX_SOURCE_KIB = \"512\"\n[limits]\ncpu_ms = 2000\n",
};

/// What a target's answers may be besides a success or a client error.
struct HttpTarget {
    name: &'static str,
    /// Server errors a correct server may still give: 504 when a guest
    /// meets its CPU limit on a pathological source.
    allowed: &'static [u16],
}

const TARGETS: &[HttpTarget] = &[
    HttpTarget {
        name: "http-token",
        allowed: &[],
    },
    HttpTarget {
        name: "http-transpile",
        allowed: &[504],
    },
    HttpTarget {
        name: "http-paths",
        allowed: &[],
    },
    HttpTarget {
        name: "http-range",
        allowed: &[],
    },
    // Last: it may replace or roll back the others' plugins.
    HttpTarget {
        name: "http-admin",
        allowed: &[],
    },
];

/// `{token}` in a seed becomes a valid token, `{admin}` the operator's.
fn fill(seed: &[u8], token: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(seed);
    text.replace("{token}", token)
        .replace("{admin}", ADMIN_TOKEN)
        .into_bytes()
}

/// A request as sent: its head mutated, its body mutated, and (mostly) a
/// `content-length` that frames the body, so that the server reads what
/// was meant rather than waiting for bytes that never come.
fn mutated(rng: &mut Rng, seeds: &[Vec<u8>], target: &str) -> (Vec<u8>, bool) {
    let pick = rng.below(seeds.len());
    let seed = &seeds[pick];
    let split = seed.windows(4).position(|w| w == b"\r\n\r\n");
    let (head, body) = match split {
        Some(i) => (seed[..i].to_vec(), seed[i + 4..].to_vec()),
        None => (seed.clone(), Vec::new()),
    };
    // One in eight goes out raw: the framing is fuzzed too.
    if rng.below(8) == 0 {
        return (spike_fuzz::mutate(rng, seeds, target), false);
    }
    let head = spike_fuzz::mutate(rng, &[head], target);
    let body = if rng.below(2) == 0 {
        spike_fuzz::mutate(rng, &[body], target)
    } else {
        body
    };
    let head: Vec<&[u8]> = head
        .split(|b| *b == b'\n')
        .filter(|line| !line.to_ascii_lowercase().starts_with(b"content-length"))
        .collect();
    let mut request = head.join(&b'\n');
    while request.ends_with(b"\r") || request.ends_with(b"\n") {
        request.pop();
    }
    let framing = format!(
        "\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    request.extend_from_slice(framing.as_bytes());
    request.extend_from_slice(&body);
    (request, true)
}

/// Sends `request` on a connection of its own and reads to the end: the
/// status, if an answer came. A request that is not `framed` is followed
/// by the end of the stream, which tells where it ends.
async fn exchange(addr: std::net::SocketAddr, request: &[u8], framed: bool) -> Option<u16> {
    let mut stream = raw_connect(addr).await;
    // The server may answer (400) and close before it has read all.
    let _ = stream.write_all(request).await;
    if !framed {
        let _ = stream.shutdown().await;
    }
    // To the end, or what came in 10 s (a followed log never ends).
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply)).await;
    let line = reply.split(|b| *b == b'\n').next()?;
    std::str::from_utf8(line)
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

async fn start(site: &Path) -> TestServer {
    let site = site.to_path_buf();
    TestServer::start_with(&[AUTH_HS256, HELLO, TRANSPILE], move |config| {
        config.secrets = hs256_secret(HS_KEY);
        config.sites = vec![SiteConfig {
            host: None,
            prefix: "/site".into(),
            dir: site,
        }];
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_requests_never_get_a_server_error() {
    let seconds: f64 = std::env::var("SPIKE_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let site = tempfile::tempdir().unwrap();
    std::fs::write(
        site.path().join("index.html"),
        "<h1>fuzz</h1>\n".repeat(100),
    )
    .unwrap();
    std::fs::create_dir_all(site.path().join("assets")).unwrap();
    std::fs::write(
        site.path().join("assets/app.js"),
        "export default 1;\n".repeat(500),
    )
    .unwrap();
    let server = start(site.path()).await;
    let token = hs256_tokens(HS_KEY, &["fuzzer"]).remove(0);
    let (status, _) = send(
        client()
            .put(server.at("/hello/files/f"))
            .body(vec![7u8; 5000]),
    )
    .await;
    assert_eq!(status, 201);
    let seed = spike_fuzz::run_seed();
    let mut rng = Rng::new(seed);
    for target in TARGETS {
        let fill_all = |inputs: Vec<Vec<u8>>| -> Vec<Vec<u8>> {
            inputs.iter().map(|s| fill(s, &token)).collect()
        };
        let regressions = fill_all(spike_fuzz::regressions(target.name));
        let seeds = fill_all(spike_fuzz::seeds(target.name));
        let started = Instant::now();
        let mut runs = 0usize;
        loop {
            let (request, framed) = match regressions.iter().chain(&seeds).nth(runs) {
                Some(fixed) => (fixed.clone(), true),
                None if started.elapsed().as_secs_f64() < seconds => {
                    mutated(&mut rng, &seeds, target.name)
                }
                None => break,
            };
            runs += 1;
            let status = exchange(server.addr(), &request, framed).await;
            let fine = match status {
                Some(s) => s < 500 || target.allowed.contains(&s),
                // Only a request whose framing is broken may go unanswered.
                None => !framed,
            };
            if !fine {
                let saved = spike_fuzz::save(target.name, &request);
                panic!(
                    "{}: {status:?} for {:?} (saved to {}; seed {seed})",
                    target.name,
                    String::from_utf8_lossy(&request[..request.len().min(600)]),
                    saved.display()
                );
            }
        }
        eprintln!("{}: {runs} requests, seed {seed}", target.name);
        let (status, _) = send(client().get(server.at("/readyz"))).await;
        assert_eq!(status, 200, "the server serves on after {}", target.name);
    }
}
