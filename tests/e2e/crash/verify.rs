//! What a restarted server must hold: every acknowledged write, whole,
//! and no write half done.

use super::*;
use futures::stream;

/// The LiveStore store as the server has it.
#[derive(Clone)]
pub struct Store {
    pub backend: String,
    pub head: u64,
}

/// Where the next round's writers go on from.
pub struct State {
    pub livestore: Store,
    /// The Yjs document's state vector (client → next clock).
    pub yjs_vector: BTreeMap<u64, u64>,
    /// The last edit of the Yjs text, which the next round's edits follow.
    pub yjs_tail: Option<(u64, u64)>,
}

/// Checks everything the ledger holds against the server.
pub async fn all(spike: &SpikeProcess, token: &str, ledger: &Shared) -> State {
    let (kv, blobs, cms, chat, acked_store, acked_yjs) = {
        let l = ledger.lock().unwrap();
        let (kv, blobs, cms) = (l.kv.clone(), l.blobs.clone(), l.cms.clone());
        (kv, blobs, cms, l.chat.clone(), l.livestore, l.yjs.clone())
    };
    kv_values(spike, &kv).await;
    objects(spike, None, &blobs).await;
    objects(spike, Some(token), &cms).await;
    chat_log(spike, &chat).await;
    let acked_sql = ledger.lock().unwrap().sql.clone();
    notes(spike, &acked_sql).await;
    let livestore = store_log(spike, acked_store).await;
    let yjs_vector = yjs_wire::state_vector_at(&ws_url(&spike.url, "/yjs/crash")).await;
    for (client, end) in &acked_yjs {
        let held = yjs_vector.get(client).copied().unwrap_or(0);
        assert!(
            held >= *end,
            "Yjs client {client}: {end} acknowledged, {held} held"
        );
    }
    let yjs_tail = yjs_vector
        .iter()
        .rfind(|(_, clock)| **clock > 0)
        .map(|(client, clock)| (*client, clock - 1));
    State {
        livestore,
        yjs_vector,
        yjs_tail,
    }
}

/// Every acknowledged note is there, and every batch whole: a note of a
/// batch (`…-a`, `-b`, `-c`) never without the other two. And the change
/// log holds what the file does, commits cut off by a kill before their
/// append included: the database rebuilt from the log (a restore to its
/// last entry) has the same notes.
async fn notes(spike: &SpikeProcess, acked: &std::collections::BTreeSet<String>) {
    let held = held_notes(spike).await;
    let lost: Vec<&String> = acked.difference(&held).collect();
    assert!(lost.is_empty(), "acknowledged notes lost: {lost:?}");
    for text in &held {
        if let Some(group) = text
            .strip_suffix("-a")
            .or(text.strip_suffix("-b"))
            .or(text.strip_suffix("-c"))
        {
            for s in ["a", "b", "c"] {
                assert!(
                    held.contains(&format!("{group}-{s}")),
                    "a batch half kept: {text} without -{s}"
                );
            }
        }
    }
    let (status, list) = send_json(
        client()
            .get(spike.at("/_spike/sql"))
            .bearer_auth(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{list}");
    let notes = (list["databases"].as_array().unwrap().iter())
        .find(|d| d["name"] == "notes")
        .unwrap_or_else(|| panic!("{list}"));
    let head = notes["bookmark"].as_str().unwrap();
    let restore = client()
        .post(spike.at("/_spike/sql/notes/restore"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({ "to": head }));
    let (status, body) = send_json(restore).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        held_notes(spike).await,
        held,
        "the log rebuilds another database"
    );
}

/// The texts of every note, page by page.
async fn held_notes(spike: &SpikeProcess) -> std::collections::BTreeSet<String> {
    let client = client();
    let mut held = std::collections::BTreeSet::new();
    let mut before = i64::MAX;
    loop {
        let page = client.get(spike.at(&format!("/notes?limit=100&before={before}")));
        let (status, body) = send_json(page).await;
        assert_eq!(status, 200, "notes: {body}");
        let page = body.as_array().unwrap();
        let Some(last) = page.last() else { break };
        before = last["id"].as_i64().unwrap();
        held.extend(page.iter().map(|n| n["text"].as_str().unwrap().to_string()));
    }
    held
}

/// Runs `check` over `items`, 16 at a time.
async fn each<T, F>(items: Vec<T>, check: impl Fn(T) -> F)
where
    F: std::future::Future<Output = ()>,
{
    stream::iter(items.into_iter().map(check))
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

async fn kv_values(spike: &SpikeProcess, acked: &BTreeMap<String, String>) {
    let client = client();
    each(acked.iter().collect(), |(key, value)| {
        let get = client.get(spike.at(&format!("/probe/kv/{key}")));
        async move {
            let (status, body) = send(get).await;
            assert_eq!((status, body.as_str()), (200, value.as_str()), "kv {key}");
        }
    })
    .await;
}

/// The index a writer's key ends with (`r0-w1-17` → 17).
fn index_of(key: &str) -> usize {
    key.rsplit('-').next().unwrap().parse().unwrap()
}

/// Blob objects (no token) or CMS documents: each acknowledged one whole;
/// each that exists (written but not acknowledged, say) whole too.
async fn objects(spike: &SpikeProcess, token: Option<&str>, acked: &BTreeMap<String, usize>) {
    let client = client();
    let mut keys: Vec<String> = acked.keys().cloned().collect();
    match token {
        None => keys = blob_keys(spike).await,
        // The document after each writer's last acknowledged one.
        Some(_) => {
            let mut last: BTreeMap<&str, usize> = BTreeMap::new();
            for key in acked.keys() {
                let (writer, _) = key.rsplit_once('-').unwrap();
                let entry = last.entry(writer).or_default();
                *entry = (*entry).max(index_of(key));
            }
            keys.extend(last.iter().map(|(w, i)| format!("{w}-{}", i + 1)));
        }
    }
    for key in acked.keys() {
        assert!(keys.contains(key), "acknowledged object {key} is gone");
    }
    each(keys, |key| {
        let get = match token {
            Some(token) => client
                .get(spike.at(&format!("/my-cms/{key}")))
                .bearer_auth(token),
            None => client.get(spike.at(&format!("/probe/blob/{key}"))),
        };
        let acked = acked.contains_key(&key);
        async move {
            let answer = within(get.send()).await.unwrap();
            let status = answer.status();
            let body = within(answer.bytes()).await.unwrap();
            if status == 404 && !acked {
                return;
            }
            assert_eq!(status, 200, "{key}: {}", String::from_utf8_lossy(&body));
            assert!(
                body == content(&key, index_of(&key)),
                "{key} is not whole ({} bytes)",
                body.len()
            );
        }
    })
    .await;
}

/// Every key of the probe's bucket.
async fn blob_keys(spike: &SpikeProcess) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = spike.at("/probe/blob?limit=1000");
        if let Some(c) = &cursor {
            url += &format!("&cursor={}", url_encode(c));
        }
        let (status, page) = send_json(client().get(url)).await;
        assert_eq!(status, 200, "{page}");
        let objects = page["objects"].as_array().unwrap();
        keys.extend(
            objects
                .iter()
                .map(|o| o["key"].as_str().unwrap().to_string()),
        );
        match page["cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return keys,
        }
    }
}

/// The chat room's whole log: numbered 1 to its head with no gap, each
/// round's messages in the order they were sent, from the first on, and
/// every acknowledged event as it was.
async fn chat_log(spike: &SpikeProcess, acked: &BTreeMap<u64, String>) {
    let mut room = rooms::RoomClient::join(&ws_url(&spike.url, "/chat/crash?since=0")).await;
    let head = room.welcome["seq"].as_u64().unwrap();
    let mut next_of_round: BTreeMap<String, u64> = BTreeMap::new();
    for seq in 1..=head {
        let event = room.next_of("event").await;
        assert_eq!(event["seq"], seq, "a gap or a repeat: {event}");
        let data = event["data"].as_str().unwrap();
        let (round, k) = data.split_once(':').unwrap();
        let expected = next_of_round.entry(round.to_string()).or_default();
        assert_eq!(k.parse::<u64>().unwrap(), *expected, "{data} out of order");
        *expected += 1;
        if let Some(was) = acked.get(&seq) {
            assert_eq!(was, data, "event {seq} changed");
        }
    }
    if let Some((last, _)) = acked.last_key_value() {
        assert!(
            *last <= head,
            "acknowledged event {last} lost (head {head})"
        );
    }
    room.close().await;
}

/// The LiveStore store read whole: events 1 to its head in order, each as
/// pushed, the acknowledged ones all there.
async fn store_log(spike: &SpikeProcess, acked: u64) -> Store {
    let url = ws_url(&spike.url, "/livestore?storeId=crash&transport=ws");
    let mut ws = rooms::RoomClient::open(&url, None).await.unwrap();
    ws.send(&livestore_wire::pull("all", "crash", false, None))
        .await;
    let (mut backend, mut head) = (String::new(), 0u64);
    loop {
        let frame = ws.next().await;
        if frame["_tag"] == "Exit" {
            assert_eq!(frame["exit"]["_tag"], "Success", "{frame}");
            break;
        }
        let response = &frame["values"][0];
        backend = response["backendId"].as_str().unwrap().to_string();
        for item in response["batch"].as_array().unwrap() {
            let event = &item["eventEncoded"];
            head += 1;
            assert_eq!(event["seqNum"], head, "a gap: {event}");
            assert_eq!(event["args"]["id"], format!("e{head}"), "{event}");
        }
    }
    assert!(
        head >= acked,
        "acknowledged event {acked} lost (head {head})"
    );
    ws.close().await;
    Store { backend, head }
}

/// The text an unmodified Yjs client reads: every round's stored edits,
/// whole and in order.
pub async fn yjs_text(spike: &SpikeProcess, state: &State) {
    let mut expected = String::new();
    for (client, clock) in &state.yjs_vector {
        let round = (client - writers::yjs_client(0)) as usize;
        for i in 0..clock / writers::CHUNK {
            expected += &writers::chunk(round, i);
        }
    }
    let mut peer = YjsPeer::start(&ws_url(&spike.url, "/yjs"), "crash").await;
    peer.synced().await;
    peer.text_is(&expected).await;
    peer.quit().await;
}
