//! LiveStore 0.4 sync messages (`@livestore/sync-cf`'s Effect RPC over a
//! WebSocket) written by hand, for tests that speak the protocol at the
//! frame level.

use serde_json::{Value, json};

/// Event `seq` of a todo store: `v1.TodoCreated` with the id `e<seq>`,
/// following event `seq - 1`.
pub fn event(seq: u64) -> Value {
    json!({"name": "v1.TodoCreated", "args": {"id": format!("e{seq}"), "text": "x"},
           "seqNum": seq, "parentSeqNum": seq - 1, "clientId": "raw", "sessionId": "s1"})
}

/// A request frame.
pub fn request(id: &str, tag: &str, payload: Value) -> String {
    json!({"_tag": "Request", "id": id, "tag": tag, "payload": payload, "headers": []}).to_string()
}

/// `SyncWsRpc.Push` of `events` into `store`, naming `backend` if given.
pub fn push(id: &str, store: &str, events: Vec<Value>, backend: Option<&str>) -> String {
    let backend = match backend {
        Some(b) => json!({"_tag": "Some", "value": b}),
        None => json!({"_tag": "None"}),
    };
    let payload = json!({"storeId": store, "batch": events, "backendId": backend});
    request(id, "SyncWsRpc.Push", payload)
}

/// `SyncWsRpc.Pull` of `store` after `cursor` (backend, event), from the
/// start if `None`; `live` keeps it open for new events.
pub fn pull(id: &str, store: &str, live: bool, cursor: Option<(&str, u64)>) -> String {
    let cursor = match cursor {
        Some((backend, seq)) => {
            json!({"_tag": "Some", "value": {"backendId": backend, "eventSequenceNumber": seq}})
        }
        None => json!({"_tag": "None"}),
    };
    let payload = json!({"storeId": store, "live": live, "cursor": cursor});
    request(id, "SyncWsRpc.Pull", payload)
}
