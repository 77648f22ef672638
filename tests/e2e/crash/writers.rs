//! The writers of one round: each writes as fast as the server answers and
//! notes what the server acknowledged, until its connection is cut.

use super::*;
use tokio::task::JoinHandle;

/// The kinds of write, as the ledger counts them.
pub const KINDS: [&str; 7] = ["kv", "blob", "cms", "chat", "livestore", "yjs", "sql"];

/// Starts every writer of `round`, continuing from what the server held
/// at its start.
pub fn start(
    spike: &SpikeProcess,
    token: &str,
    round: usize,
    state: &verify::State,
    ledger: &Shared,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for w in 0..KV_WRITERS {
        let (url, ledger) = (spike.url.clone(), ledger.clone());
        tasks.push(tokio::spawn(kv(url, format!("r{round}-w{w}"), ledger)));
    }
    for w in 0..BLOB_WRITERS {
        let (url, ledger) = (spike.url.clone(), ledger.clone());
        tasks.push(tokio::spawn(objects(
            url,
            None,
            format!("r{round}-w{w}"),
            ledger,
        )));
    }
    for w in 0..CMS_WRITERS {
        let (url, ledger) = (spike.url.clone(), ledger.clone());
        let token = Some(token.to_string());
        tasks.push(tokio::spawn(objects(
            url,
            token,
            format!("r{round}-w{w}"),
            ledger,
        )));
    }
    for w in 0..SQL_WRITERS {
        let (url, ledger) = (spike.url.clone(), ledger.clone());
        tasks.push(tokio::spawn(sql(url, format!("r{round}-w{w}"), ledger)));
    }
    let url = ws_url(&spike.url, "/chat/crash");
    tasks.push(tokio::spawn(chat(url, round, ledger.clone())));
    let url = ws_url(&spike.url, "/livestore?storeId=crash&transport=ws");
    let from = state.livestore.clone();
    tasks.push(tokio::spawn(livestore(url, from, ledger.clone())));
    let url = ws_url(&spike.url, "/yjs/crash");
    let after = state.yjs_tail;
    tasks.push(tokio::spawn(yjs(url, round, after, ledger.clone())));
    tasks
}

/// Notes an answer that is neither a success nor a cut connection.
fn unexpected(ledger: &Shared, what: String) {
    ledger.lock().unwrap().unexpected.push(what);
}

async fn kv(url: String, prefix: String, ledger: Shared) {
    let client = client();
    for i in 0.. {
        let key = format!("{prefix}-{i}");
        let value = format!("value of {key}");
        let put = client
            .put(format!("{url}/probe/kv/{key}"))
            .body(value.clone());
        let Ok(answer) = put.send().await else { return };
        if !answer.status().is_success() {
            let body = answer.text().await.unwrap_or_default();
            return unexpected(&ledger, format!("kv {key}: {body}"));
        }
        let mut ledger = ledger.lock().unwrap();
        ledger.kv.insert(key, value);
        ledger.acked("kv");
    }
}

/// Notes: one at a time, and every third write a batch of three (kept
/// whole or not at all).
async fn sql(url: String, prefix: String, ledger: Shared) {
    let client = client();
    for i in 0.. {
        let texts: Vec<String> = match i % 3 {
            2 => ["a", "b", "c"]
                .map(|s| format!("{prefix}-{i}-{s}"))
                .to_vec(),
            _ => vec![format!("{prefix}-{i}")],
        };
        let post = match texts.len() {
            1 => client
                .post(format!("{url}/notes"))
                .json(&serde_json::json!({ "text": texts[0] })),
            _ => client.post(format!("{url}/notes/import")).json(&texts),
        };
        let Ok(answer) = post.send().await else {
            return;
        };
        if answer.status() != 201 {
            let body = answer.text().await.unwrap_or_default();
            return unexpected(&ledger, format!("sql {texts:?}: {body}"));
        }
        let mut ledger = ledger.lock().unwrap();
        ledger.sql.extend(texts);
        ledger.acked("sql");
    }
}

/// Blob objects (no token) or CMS documents (with one).
async fn objects(url: String, token: Option<String>, prefix: String, ledger: Shared) {
    let client = client();
    for i in 0.. {
        let key = format!("{prefix}-{i}");
        let mut put = match &token {
            Some(token) => client.put(format!("{url}/my-cms/{key}")).bearer_auth(token),
            None => client.put(format!("{url}/probe/blob/{key}")),
        };
        put = put.body(content(&key, i));
        let Ok(answer) = put.send().await else { return };
        let status = answer.status();
        // The whole answer: the write counts once it is all here.
        let Ok(body) = answer.text().await else {
            return;
        };
        if !status.is_success() {
            return unexpected(&ledger, format!("{key}: {status} {body}"));
        }
        let mut ledger = ledger.lock().unwrap();
        if token.is_some() {
            ledger.cms.insert(key, i);
            ledger.acked("cms");
        } else {
            ledger.blobs.insert(key, i);
            ledger.acked("blob");
        }
    }
}

/// Messages into a relay room, 32 in flight; a message is acknowledged
/// when its event (numbered) comes back to its sender.
async fn chat(url: String, round: usize, ledger: Shared) {
    let Ok((mut ws, _)) = connect_async(&url).await else {
        return;
    };
    let (mut sent, mut acked) = (0usize, 0usize);
    loop {
        while sent - acked < 32 {
            let message = Message::text(format!("r{round}:{sent}"));
            if ws.send(message).await.is_err() {
                return;
            }
            sent += 1;
        }
        let Some(Ok(Message::Text(text))) = ws.next().await else {
            return;
        };
        let frame: Value = serde_json::from_str(&text).unwrap();
        if frame["type"] == "event" {
            let mut ledger = ledger.lock().unwrap();
            let seq = frame["seq"].as_u64().unwrap();
            ledger
                .chat
                .insert(seq, frame["data"].as_str().unwrap().into());
            ledger.acked("chat");
            acked += 1;
        }
    }
}

/// LiveStore pushes of 10 events each, the next after the last's
/// acknowledgement (`Exit` with `Success`).
async fn livestore(url: String, from: verify::Store, ledger: Shared) {
    let Ok((mut ws, _)) = connect_async(&url).await else {
        return;
    };
    let mut head = from.head;
    for id in 0.. {
        let events = (head + 1..=head + 10).map(livestore_wire::event).collect();
        let push = livestore_wire::push(&id.to_string(), "crash", events, Some(&from.backend));
        if ws.send(Message::text(push)).await.is_err() {
            return;
        }
        let exit = loop {
            let Some(Ok(Message::Text(text))) = ws.next().await else {
                return;
            };
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["_tag"] == "Exit" {
                break frame;
            }
        };
        if exit["exit"]["_tag"] != "Success" {
            return unexpected(&ledger, format!("livestore push: {exit}"));
        }
        head += 10;
        let mut ledger = ledger.lock().unwrap();
        ledger.livestore = head;
        ledger.acked("livestore");
    }
}

/// The Yjs client of `round`: its id.
pub fn yjs_client(round: usize) -> u64 {
    1000 + round as u64
}

/// The fixed size of each Yjs edit.
pub const CHUNK: u64 = 10;

/// The text of edit `i` of `round`.
pub fn chunk(round: usize, i: u64) -> String {
    format!("{round:02}-{i:06};")
}

/// Yjs edits appended one after another (32 in flight), the first after
/// `after` (the last edit the document held); an edit is acknowledged
/// when another client of the document is sent it.
async fn yjs(url: String, round: usize, after: Option<(u64, u64)>, ledger: Shared) {
    let Ok((mut writer, _)) = connect_async(&url).await else {
        return;
    };
    let Ok((mut observer, _)) = connect_async(&url).await else {
        return;
    };
    let client = yjs_client(round);
    let (mut sent, mut acked) = (0u64, 0u64);
    loop {
        while sent - acked < 32 {
            let origin = if sent == 0 {
                after
            } else {
                Some((client, sent * CHUNK - 1))
            };
            let update = yjs_wire::append(client, sent * CHUNK, origin, &chunk(round, sent));
            let message = Message::binary(yjs_wire::update_message(&update));
            if writer.send(message).await.is_err() {
                return;
            }
            sent += 1;
        }
        // The writer is sent nothing it must read; the observer is.
        let Some(Ok(message)) = observer.next().await else {
            return;
        };
        let Message::Binary(bytes) = message else {
            continue;
        };
        for (who, clock) in yjs_wire::update_heads(&bytes).unwrap_or_default() {
            if who == client {
                // At least this edit, ending CHUNK later, is stored.
                acked = acked.max(clock / CHUNK + 1);
                let mut ledger = ledger.lock().unwrap();
                ledger.yjs.insert(client, acked * CHUNK);
                ledger.acked("yjs");
            }
        }
    }
}
