//! A mutation driver for the fuzz targets of `spike::fuzz`, on the stable
//! toolchain: each input is a seed (`fuzz/seeds/<target>/`, and every
//! regression in `fuzz/regressions/<target>/`) changed by a few random
//! mutations, run with panics caught, for a bounded time. It has no
//! coverage feedback; `cargo fuzz` (libFuzzer, `fuzz/libfuzzer/`) has, and
//! `bench/fuzz.sh` runs it where it builds.
//!
//! An input that panics is saved to `fuzz/artifacts/<target>/` and
//! reported with the run's seed; copied into `fuzz/regressions/<target>/`
//! it is run by every test run after.

mod mutate;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use mutate::{Rng, mutate};
pub use spike::fuzz::{TARGETS, Target};

/// This crate's folder (seeds, regressions and artifacts are under it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files of `dir`, each an input; none if there is no such folder.
fn inputs_in(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    paths.sort();
    paths.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// The seeds of `target`: its seed files (for manifests, the shipped
/// ones too) and its regressions.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let mut seeds = inputs_in(&root().join("seeds").join(target));
    if target == "manifest" {
        let shipped = inputs_in(&root().join("../plugins"));
        seeds.extend(
            shipped
                .into_iter()
                .filter(|f| std::str::from_utf8(f).is_ok()),
        );
    }
    seeds.extend(regressions(target));
    if seeds.is_empty() {
        seeds.push(Vec::new());
    }
    seeds
}

/// Inputs that once failed `target`, kept so that they never fail again.
pub fn regressions(target: &str) -> Vec<Vec<u8>> {
    inputs_in(&root().join("regressions").join(target))
}

/// A target's run: how many inputs it took.
#[derive(Debug)]
pub struct Report {
    pub target: &'static str,
    pub runs: u64,
    pub elapsed: Duration,
}

/// An input that made a target panic.
#[derive(Debug)]
pub struct Crash {
    pub target: &'static str,
    pub message: String,
    /// Where the input was saved.
    pub saved: PathBuf,
    pub input: Vec<u8>,
}

impl std::fmt::Display for Crash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = &self.input[..self.input.len().min(512)];
        write!(
            f,
            "{} panicked: {}\ninput ({} bytes, saved to {}): {:?}",
            self.target,
            self.message,
            self.input.len(),
            self.saved.display(),
            String::from_utf8_lossy(shown)
        )
    }
}

/// Where the last panic happened (the hook `fuzz` sets notes it).
static PANIC_AT: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// Runs `target` on `input`; the panic's message if it panicked.
pub fn try_input(target: &Target, input: &[u8]) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| (target.1)(input))).map_err(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into());
        let at = std::mem::take(&mut *PANIC_AT.lock().unwrap());
        format!("{message} {at}")
    })
}

/// Fuzzes `target` for `budget` from the random seed `seed`: every seed
/// input first, then mutations of them.
pub fn fuzz(target: &Target, budget: Duration, seed: u64) -> Result<Report, Crash> {
    let corpus = seeds(target.0);
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut runs = 0u64;
    let quiet = std::panic::take_hook();
    // The panics are reported as crashes, not printed as they happen.
    std::panic::set_hook(Box::new(|info| {
        if let Some(at) = info.location() {
            *PANIC_AT.lock().unwrap() = format!("at {}:{}", at.file(), at.line());
        }
    }));
    let outcome = loop {
        let input = match corpus.get(runs as usize) {
            Some(seed) => seed.clone(),
            None => {
                if started.elapsed() >= budget {
                    break Ok(());
                }
                mutate::mutate(&mut rng, &corpus, target.0)
            }
        };
        runs += 1;
        if let Err(message) = try_input(target, &input) {
            break Err((message, input));
        }
    };
    std::panic::set_hook(quiet);
    match outcome {
        Ok(()) => Ok(Report {
            target: target.0,
            runs,
            elapsed: started.elapsed(),
        }),
        Err((message, input)) => Err(Crash {
            target: target.0,
            saved: save(target.0, &input),
            message,
            input,
        }),
    }
}

/// Saves a crashing input under `fuzz/artifacts/<target>/`.
pub fn save(target: &str, input: &[u8]) -> PathBuf {
    let dir = root().join("artifacts").join(target);
    let _ = std::fs::create_dir_all(&dir);
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    let path = dir.join(format!("crash-{hash:016x}"));
    let _ = std::fs::write(&path, input);
    path
}

/// A seed for a run: `SPIKE_FUZZ_SEED`, else the clock's.
pub fn run_seed() -> u64 {
    std::env::var("SPIKE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}
