//! `kill -9` of a spike process while KV, blob, CMS, room, Yjs, LiveStore
//! and SQL writes run at once, several times over: after every restart
//! each acknowledged write is there and whole, the room's and the store's
//! sequences have no gap, no object or document is half-written, no SQL
//! batch is half kept, and the Yjs document is every acknowledged edit in
//! order.
//!
//! `SPIKE_CRASH_ROUNDS` sets the number of kills (3 here; `bench/crash.sh`
//! runs more).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use spike_e2e::node::YjsPeer;
use spike_e2e::process::SpikeProcess;
use spike_e2e::rooms::{tungstenite::Message, ws_url};
use spike_e2e::tokens::{AUTH_HS256, hs256_tokens};
use spike_e2e::*;
use spike_e2e::{livestore_wire, yjs_wire};
use tokio_tungstenite::connect_async;

#[path = "crash/verify.rs"]
mod verify;
#[path = "crash/writers.rs"]
mod writers;

const HS_KEY: &str = "crash-test-hs256-key";

/// The writers of each kind running at once.
const KV_WRITERS: usize = 3;
const BLOB_WRITERS: usize = 2;
const CMS_WRITERS: usize = 2;
const SQL_WRITERS: usize = 2;

/// Acknowledged writes a kind must have in a round before the kill.
const ACKS_BEFORE_KILL: usize = 15;

fn plugins() -> Vec<Plugin<'static>> {
    vec![
        Plugin {
            name: "probe",
            guest: "fixture_probe",
            manifest: "[[routes]]\nprefix = \"/probe\"\n[grants]\nkv = [\"probe\"]\nblob = [\"probe-files\"]\n",
        },
        AUTH_HS256,
        Plugin {
            name: "cms",
            guest: "cms",
            // Bodies over 16 KiB go to blob storage: both kinds are written.
            manifest: "[[routes]]\nprefix = \"/my-cms\"\nauth = \"required\"\n\
                       [grants]\nkv = [\"cms\"]\nblob = [\"cms\"]\n\
                       [env]\nMAX_VERSIONS = \"3\"\nBLOB_THRESHOLD_BYTES = \"16384\"\n",
        },
        Plugin {
            name: "notes",
            guest: "notes",
            manifest: "[[routes]]\nprefix = \"/notes\"\nmethods = [\"GET\", \"POST\"]\n\
                       [grants]\nsql = [\"notes\"]\n[env]\nWRITE_ACCESS = \"anyone\"\n",
        },
        Plugin {
            name: "rooms",
            guest: "",
            // Nothing compacted away in the chat: its whole log is checked.
            manifest: "[[rooms]]\nprefix = \"/chat\"\nmessages_per_s = 1000000\ncompact_every = 1000000\n\
                       [[rooms]]\nprefix = \"/yjs\"\nprotocol = \"yjs\"\nmessages_per_s = 1000000\n\
                       [[rooms]]\nprefix = \"/livestore\"\nprotocol = \"livestore\"\n",
        },
    ]
}

/// What the server acknowledged, over all rounds.
#[derive(Default)]
struct Ledger {
    /// KV key → value.
    kv: BTreeMap<String, String>,
    /// Blob key → its index (the body is `content(key, index)`).
    blobs: BTreeMap<String, usize>,
    /// CMS path → its index.
    cms: BTreeMap<String, usize>,
    /// Chat event number → its text.
    chat: BTreeMap<u64, String>,
    /// The LiveStore store's highest acknowledged event.
    livestore: u64,
    /// Yjs client → the clock its acknowledged edits reach.
    yjs: BTreeMap<u64, u64>,
    /// The texts of acknowledged notes (a batch's three each).
    sql: std::collections::BTreeSet<String>,
    /// Acknowledgements this round, by kind.
    round_acks: BTreeMap<&'static str, usize>,
    /// Answers that were neither a success nor a lost connection.
    unexpected: Vec<String>,
}

type Shared = Arc<Mutex<Ledger>>;

impl Ledger {
    fn acked(&mut self, kind: &'static str) {
        *self.round_acks.entry(kind).or_default() += 1;
    }
}

/// The body of write `index` at `key`: 100 B to 200 KiB, its bytes
/// depending on both (a half-written or mixed-up body cannot match).
fn content(key: &str, index: usize) -> Vec<u8> {
    let size = [100, 5_000, 40_000, 200_000][index % 4];
    let seed = key
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
    let mut body = format!("{key}:{index}:").into_bytes();
    body.extend(
        (0..size as u32).map(|i| (seed.wrapping_add(i.wrapping_mul(2_654_435_761)) >> 24) as u8),
    );
    body
}

fn rounds() -> usize {
    std::env::var("SPIKE_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_of_every_kind_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let plugins_dir = dir.path().join("plugins");
    write_plugins(&plugins_dir, &plugins());
    let mut spike = SpikeProcess::new(
        "crash",
        &plugins_dir,
        &dir.path().join("data"),
        dir.path().join("spike.log"),
        &["--max-instances", "64"],
    )
    .env("SPIKE_SECRET_HS_KEY", HS_KEY);
    let token = hs256_tokens(HS_KEY, &["writer"]).remove(0);
    let ledger: Shared = Arc::default();
    let rounds = rounds();
    for round in 0..=rounds {
        spike.restart().await;
        let state = within_for(
            Duration::from_secs(120),
            verify::all(&spike, &token, &ledger),
        )
        .await;
        if round == rounds {
            within(verify::yjs_text(&spike, &state)).await;
            let l = ledger.lock().unwrap();
            eprintln!(
                "after {rounds} kills, every acknowledged write held: {} KV values, {} blob objects, \
                 {} CMS documents, {} chat events, {} LiveStore events, {} Yjs edits, {} SQL rows",
                l.kv.len(),
                l.blobs.len(),
                l.cms.len(),
                l.chat.len(),
                l.livestore,
                l.yjs.values().sum::<u64>() / writers::CHUNK,
                l.sql.len()
            );
            break;
        }
        ledger.lock().unwrap().round_acks.clear();
        let writers = writers::start(&spike, &token, round, &state, &ledger);
        // Under load: every kind has had writes acknowledged; then a kill
        // at a moment that differs each round.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let counts = ledger.lock().unwrap().round_acks.clone();
            let loaded = writers::KINDS
                .iter()
                .all(|kind| counts.get(kind).is_some_and(|&n| n >= ACKS_BEFORE_KILL));
            if loaded {
                break;
            }
            let unexpected = ledger.lock().unwrap().unexpected.clone();
            assert!(
                tokio::time::Instant::now() < deadline && unexpected.is_empty(),
                "round {round}: not every kind written within 60 s: {counts:?} {unexpected:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(97 * round as u64 % 400)).await;
        spike.kill();
        for writer in writers {
            within(writer).await.expect("a writer panicked");
        }
        let ledger = ledger.lock().unwrap();
        assert!(ledger.unexpected.is_empty(), "{:?}", ledger.unexpected);
        eprintln!(
            "round {round}: acknowledged before the kill {:?}",
            ledger.round_acks
        );
    }
}
