//! A soak: every service of one spike process at once, at a steady high
//! load, for a set time: HTTP plugins (hello's greeting and KV counter),
//! CMS documents behind the auth hook, transpiles, renders of inline HTML
//! in Chromium, AI chat calls to the fake provider, and hundreds of room
//! members sending every second. What it measures: every answer that was
//! not what the service promises, the server's RSS and open files each
//! second (and their slopes after a warm-up), and HTTP latency's p99 in
//! windows of 10 s.
//!
//! Run by `tests/e2e/soak.rs` (60 s, the debug build) and by the `soak`
//! binary (`bench/soak.sh`: 10 minutes, the release build).

mod workers;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_ai::{ANTHROPIC_KEY, FakeAi, OPENAI_KEY};
use crate::process::SpikeProcess;
use crate::tokens::{AUTH_HS256, hs256_tokens};
use crate::{Plugin, write_plugins};

const HS_KEY: &str = "soak-hs256-key";

/// How long and how hard.
pub struct Settings {
    pub duration: Duration,
    /// Room members (in rooms of 20), each sending a message a second.
    pub members: usize,
    /// Clients in a closed loop on the HTTP plugin routes.
    pub http_clients: usize,
    /// The spike binary (the debug build if `None`).
    pub binary: Option<PathBuf>,
}

/// What a soak saw.
#[derive(Debug)]
pub struct Report {
    /// Answers by kind of call.
    pub calls: std::collections::BTreeMap<&'static str, u64>,
    /// Room events delivered to members.
    pub deliveries: u64,
    /// What went wrong (the first 50).
    pub errors: Vec<String>,
    pub error_count: u64,
    /// (seconds from the start, RSS KiB, open files), each second.
    pub samples: Vec<(f64, u64, u64)>,
    /// HTTP p99 in ms per 10 s window.
    pub p99_ms: Vec<f64>,
    /// The data folder's size at the end (the database grows with every
    /// write, and redb's page cache with it).
    pub data_bytes: u64,
}

/// What the workers share.
#[derive(Default)]
pub struct Tally {
    calls: std::collections::BTreeMap<&'static str, u64>,
    deliveries: u64,
    errors: Vec<String>,
    error_count: u64,
    /// (seconds from the start, ms) of every HTTP call.
    latencies: Vec<(f32, f32)>,
}

pub type Shared = Arc<Mutex<Tally>>;

impl Tally {
    fn error(&mut self, what: String) {
        self.error_count += 1;
        if self.errors.len() < 50 {
            self.errors.push(what);
        }
    }
}

/// The plugins: hello, auth, CMS, transpile, render, AI (to `fake`) and
/// chat rooms, with manifests as shipped but for the per-address rate
/// limits (every soak client is 127.0.0.1; render's is left out, the
/// transpiler's line dropped, the AI quota above the soak's rate).
fn write_soak_plugins(dir: &Path, fake: &FakeAi) {
    let ai = crate::ai_server::manifest(fake, &crate::ai_server::providers(fake, ""), "");
    let shipped = |name: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../plugins/{name}.toml"));
        let text = std::fs::read_to_string(path).unwrap();
        // Without its `component = …` line: written again below.
        text.lines()
            .filter(|l| !l.starts_with("component") && !l.starts_with("rate_limit"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (cms, transpile) = (shipped("cms"), shipped("transpile"));
    write_plugins(
        dir,
        &[
            crate::HELLO,
            AUTH_HS256,
            Plugin {
                name: "cms",
                guest: "cms",
                manifest: &cms,
            },
            Plugin {
                name: "transpile",
                guest: "transpile",
                manifest: &transpile,
            },
            crate::render_pages::RENDER,
            Plugin {
                name: "ai",
                guest: "ai",
                manifest: &ai,
            },
            Plugin {
                name: "rooms",
                guest: "",
                manifest: "[[rooms]]\nprefix = \"/chat\"\nmax_connections = 1000\n",
            },
        ],
    );
}

/// Starts spike with every service and soaks it.
pub async fn run(settings: &Settings) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeAi::start().await;
    write_soak_plugins(&dir.path().join("plugins"), &fake);
    let mut spike = SpikeProcess::new(
        "soak",
        &dir.path().join("plugins"),
        &dir.path().join("data"),
        dir.path().join("spike.log"),
        &["--max-instances", "256"],
    )
    .env("SPIKE_SECRET_HS_KEY", HS_KEY)
    .env("SPIKE_SECRET_OPENAI_API_KEY", OPENAI_KEY)
    .env("SPIKE_SECRET_ANTHROPIC_API_KEY", ANTHROPIC_KEY);
    if let Some(binary) = &settings.binary {
        spike = spike.binary(binary.clone());
    }
    spike.restart().await;
    let token = hs256_tokens(HS_KEY, &["soaker"]).remove(0);
    let mut report = soak(&spike, &token, settings).await;
    report.data_bytes = folder_bytes(&dir.path().join("data"));
    let status = spike.terminate(Duration::from_secs(60)).await;
    assert!(status.success(), "the stop after the soak: {status}");
    report
}

async fn soak(spike: &SpikeProcess, token: &str, settings: &Settings) -> Report {
    let tally: Shared = Arc::default();
    let started = Instant::now();
    let until = started + settings.duration;
    let mut tasks = workers::start(spike, token, settings, started, until, &tally).await;
    let pid = spike.pid();
    let mut samples = Vec::new();
    while Instant::now() < until {
        samples.push((
            started.elapsed().as_secs_f64(),
            crate::rss_bytes_of(&pid.to_string()) / 1024,
            open_files(pid),
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for task in tasks.drain(..) {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("every worker ends within 60 s of the end")
            .expect("no worker panicked");
    }
    let mut tally = tally.lock().unwrap();
    // Calls that ended after the end (the last render, say) are not of the
    // steady load.
    let end = settings.duration.as_secs_f32();
    tally.latencies.retain(|(at, _)| *at < end);
    let p99_ms = windows_p99(&mut tally.latencies, 10.0);
    Report {
        calls: std::mem::take(&mut tally.calls),
        deliveries: tally.deliveries,
        errors: std::mem::take(&mut tally.errors),
        error_count: tally.error_count,
        samples,
        p99_ms,
        data_bytes: 0,
    }
}

/// The size of every file under `dir`.
fn folder_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => folder_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn open_files(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

/// The p99 of each window of `seconds`.
fn windows_p99(latencies: &mut [(f32, f32)], seconds: f32) -> Vec<f64> {
    latencies.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut windows = Vec::new();
    for chunk in latencies.chunk_by(|a, b| (a.0 / seconds) as u32 == (b.0 / seconds) as u32) {
        let mut ms: Vec<f32> = chunk.iter().map(|(_, ms)| *ms).collect();
        ms.sort_by(f32::total_cmp);
        windows.push(f64::from(ms[(ms.len() * 99 / 100).min(ms.len() - 1)]));
    }
    windows
}

impl Report {
    /// The least-squares slope of `value` per minute over the samples
    /// after the first third (the warm-up: caches and pools fill).
    pub fn slope_per_min(&self, value: impl Fn(&(f64, u64, u64)) -> u64) -> f64 {
        let after = &self.samples[self.samples.len() / 3..];
        let n = after.len() as f64;
        let (mx, my) = after.iter().fold((0.0, 0.0), |(x, y), s| {
            (x + s.0 / n, y + value(s) as f64 / n)
        });
        let (sxy, sxx) = after.iter().fold((0.0, 0.0), |(xy, xx), s| {
            let dx = s.0 - mx;
            (xy + dx * (value(s) as f64 - my), xx + dx * dx)
        });
        if sxx == 0.0 { 0.0 } else { sxy / sxx * 60.0 }
    }

    /// After the warm-up, and at the end: (RSS KiB, open files).
    pub fn warm_and_end(&self) -> ((u64, u64), (u64, u64)) {
        let warm = self.samples[self.samples.len() / 3];
        let end = *self.samples.last().unwrap();
        ((warm.1, warm.2), (end.1, end.2))
    }

    /// The report as one JSON object.
    pub fn json(&self) -> Value {
        let ((rss_warm, fds_warm), (rss_end, fds_end)) = self.warm_and_end();
        json!({
            "calls": self.calls,
            "room_deliveries": self.deliveries,
            "errors": self.error_count,
            "first_errors": self.errors,
            "rss_mib_after_warmup": rss_warm / 1024,
            "rss_mib_end": rss_end / 1024,
            "rss_slope_mib_per_min": self.slope_per_min(|s| s.1) / 1024.0,
            "open_files_after_warmup": fds_warm,
            "open_files_end": fds_end,
            "open_files_slope_per_min": self.slope_per_min(|s| s.2),
            "p99_ms_per_10s": self.p99_ms,
            "data_mib_end": self.data_bytes >> 20,
        })
    }
}
