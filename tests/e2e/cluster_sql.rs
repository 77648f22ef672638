//! SQL databases on a cluster of `spike` processes sharing a real
//! nats-server: one owner per database, other nodes forwarding to it;
//! every acknowledged write in the shared log before its answer, so the
//! owner's death (`kill -9`) loses none of them, and another node takes
//! the database within seconds; an owner paused past its lease cannot
//! commit for it any more.
//!
//! A binary of its own: it kills and pauses nodes, and times a takeover.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spike_e2e::cluster::{Cluster, Node};
use spike_e2e::*;

const NOTES: Plugin = Plugin {
    name: "notes",
    guest: "notes",
    manifest: "[[routes]]\nprefix = \"/notes\"\nmethods = [\"GET\", \"POST\"]\n\
               [grants]\nsql = [\"notes\"]\n[env]\nWRITE_ACCESS = \"anyone\"\n",
};

/// Posts a note through the node at `base`: its id, if acknowledged.
async fn post(base: &str, text: &str) -> Option<i64> {
    let request = client()
        .post(format!("{base}/notes"))
        .json(&serde_json::json!({ "text": text }))
        .timeout(Duration::from_secs(10));
    let response = request.send().await.ok()?;
    if response.status() != 201 {
        return None;
    }
    let note: serde_json::Value = response.json().await.ok()?;
    note["id"].as_i64()
}

/// Every note, by text → id, read through `node` page by page.
async fn all_notes(node: &Node) -> BTreeMap<String, i64> {
    let mut notes = BTreeMap::new();
    let mut before = i64::MAX;
    loop {
        let url = node.at(&format!("/notes?limit=100&before={before}"));
        let (status, page) = within(send_json(client().get(url))).await;
        assert_eq!(status, 200, "{page}");
        let page = page.as_array().unwrap().clone();
        let Some(last) = page.last() else {
            return notes;
        };
        before = last["id"].as_i64().unwrap();
        for note in &page {
            let text = note["text"].as_str().unwrap().to_string();
            assert!(notes.insert(text, note["id"].as_i64().unwrap()).is_none());
        }
    }
}

/// Acknowledged writes of one writer, in the order acknowledged.
type Acked = Arc<Mutex<Vec<(String, i64, Instant)>>>;

/// Writes through `node` until `stop`, one after another.
fn writer(
    node: &Node,
    name: &'static str,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (Acked, tokio::task::JoinHandle<()>) {
    let acked: Acked = Arc::default();
    let base = node.url.clone();
    let kept = acked.clone();
    let task = tokio::spawn(async move {
        let mut i = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let text = format!("{name}-{i}");
            i += 1;
            if let Some(id) = post(&base, &text).await {
                kept.lock().unwrap().push((text, id, Instant::now()));
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    (acked, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_owner_killed_under_writes_through_every_node_loses_no_acknowledged_one() {
    let mut cluster = Cluster::start(3, &[NOTES]).await;
    // Node 1 owns the database: the first to open it.
    assert!(within(post(&cluster.node(1).url, "first")).await.is_some());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = [(1, "one"), (2, "two"), (3, "three")]
        .into_iter()
        .map(|(n, name)| writer(cluster.node(n), name, stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_kill: usize = writers.iter().map(|w| w.0.lock().unwrap().len()).sum();
    assert!(before_kill >= 10, "only {before_kill} writes in 1.5 s");
    let killed = Instant::now();
    cluster.node_mut(1).kill();
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, tasks): (Vec<Acked>, Vec<_>) = writers.into_iter().unzip();
    for task in tasks {
        within_for(Duration::from_secs(30), task).await.unwrap();
    }
    // The takeover: the longest the other nodes' writers went without an
    // acknowledgement, from the kill on (answers already on their way
    // from the dying owner come first).
    let mut times: Vec<Instant> = (acked[1..].iter())
        .flat_map(|w| w.lock().unwrap().iter().map(|a| a.2).collect::<Vec<_>>())
        .filter(|at| *at > killed)
        .collect();
    times.sort();
    let last = *times
        .last()
        .expect("no write was acknowledged after the owner died");
    let offsets: Vec<u128> = times.iter().map(|t| (*t - killed).as_millis()).collect();
    assert!(
        last > killed + Duration::from_secs(4),
        "writes stopped for good: acknowledged at {offsets:?} ms after the kill"
    );
    let takeover = (times.windows(2).map(|p| p[1] - p[0]))
        .chain(times.first().map(|first| *first - killed))
        .max()
        .unwrap();
    eprintln!(
        "with its owner killed, the database went {} ms without a write",
        takeover.as_millis()
    );
    assert!(takeover < Duration::from_secs(5), "took {takeover:?}");

    let kept = within_for(Duration::from_secs(30), all_notes(cluster.node(2))).await;
    let mut count = 1;
    for w in &acked {
        let w = w.lock().unwrap();
        // In one order: each writer's ids rise as it was acknowledged.
        assert!(w.windows(2).all(|p| p[0].1 < p[1].1), "{w:?}");
        for (text, id, _) in w.iter() {
            assert_eq!(kept.get(text), Some(id), "acknowledged {text} is missing");
            count += 1;
        }
    }
    assert!(kept.contains_key("first"));
    eprintln!("{count} acknowledged writes, {} rows kept", kept.len());
    // The third node reads the same rows, forwarded to the new owner.
    assert_eq!(
        within_for(Duration::from_secs(30), all_notes(cluster.node(3))).await,
        kept
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_cannot_commit_once_its_lease_is_gone() {
    let cluster = Cluster::start(2, &[NOTES]).await;
    assert!(
        within(post(&cluster.node(1).url, "before the pause"))
            .await
            .is_some()
    );
    cluster.node(1).signal("STOP");
    let taken = within_for(Duration::from_secs(30), async {
        loop {
            if post(&cluster.node(2).url, "while paused").await.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    taken.await;
    cluster.node(1).signal("CONT");
    // Woken, node 1 no longer owns the database: its write goes to node 2.
    assert!(
        within(post(&cluster.node(1).url, "after the pause"))
            .await
            .is_some()
    );
    let through_2 = within(all_notes(cluster.node(2))).await;
    let texts: Vec<&str> = through_2.keys().map(String::as_str).collect();
    assert_eq!(
        texts,
        ["after the pause", "before the pause", "while paused"]
    );
    assert_eq!(within(all_notes(cluster.node(1))).await, through_2);

    // An answer past a NATS message (1 MiB) comes back whole through the
    // node that does not own the database.
    let big = client()
        .post(cluster.node(1).at("/_spike/sql/notes/execute"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({ "sql": "SELECT hex(randomblob(1000000)) AS big" }));
    let (status, answer) = within(send_json(big)).await;
    assert_eq!(status, 200, "{answer}");
    let text = answer["results"][0]["rows"][0][0].as_str().unwrap();
    assert_eq!(text.len(), 2_000_000);
}

/// A statement forwarded to the database's owner continues the caller's
/// trace there: the owner's span is a child of the entry node's SQL
/// call, in the same trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_statement_continues_the_trace_on_the_owner() {
    let receiver = spike_e2e::otlp::Receiver::http().await;
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ];
    let cluster = Cluster::start_with(2, &[NOTES], &env).await;
    // Node 1 opens the database (its owner); node 2 forwards to it.
    let owner = cluster.node(1).url.clone();
    assert!(within(post(&owner, "first")).await.is_some());
    let entry = cluster.node(2).url.clone();
    assert!(within(post(&entry, "forwarded")).await.is_some());
    let spans = receiver
        .wait_for(Duration::from_secs(30), |spans| {
            spans.iter().any(|s| s.name == "sql (forwarded)")
        })
        .await;
    let forwarded = spans.iter().find(|s| s.name == "sql (forwarded)").unwrap();
    let node = |s: &spike_e2e::otlp::Span| s.resource.get("spike.node").cloned();
    assert_eq!(node(forwarded).as_deref(), Some("node-1"));
    let parent = (spans.iter())
        .find(|s| s.span_id == forwarded.parent)
        .unwrap_or_else(|| {
            panic!(
                "its parent was sent:\n{}",
                spike_e2e::otlp::describe(&spans)
            )
        });
    assert_eq!(parent.trace_id, forwarded.trace_id);
    assert_eq!(parent.attr("spike.capability"), Some("sql"));
    assert_eq!(node(parent).as_deref(), Some("node-2"));
}
