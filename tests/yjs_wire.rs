//! Yjs updates and y-protocols messages written and read by hand, for
//! tests that must know exactly which edit the server acknowledged: one
//! client appending fixed-size ASCII chunks to the root text `"text"`
//! (the text `tests/node/yjs-peer.mjs` reads), in Yjs' update format v1.

/// lib0's unsigned varint.
fn put_var(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads a lib0 varint at `*at`, moving past it.
pub fn read_var(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        n |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(n);
        }
    }
    None
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    put_var(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// An update inserting `text` (ASCII) as client `client`'s item at
/// `clock`, right after the item `after` (client, clock), or at the start
/// of the text when `None`.
pub fn append(client: u64, clock: u64, after: Option<(u64, u64)>, text: &str) -> Vec<u8> {
    let mut update = Vec::new();
    put_var(&mut update, 1); // one client's structs
    put_var(&mut update, 1); // one struct
    put_var(&mut update, client);
    put_var(&mut update, clock);
    match after {
        // ContentString (4) with an origin (bit 8): the parent follows
        // from the origin.
        Some((origin_client, origin_clock)) => {
            update.push(0x84);
            put_var(&mut update, origin_client);
            put_var(&mut update, origin_clock);
        }
        // No origin: the parent is the root type, named.
        None => {
            update.push(0x04);
            put_var(&mut update, 1);
            put_string(&mut update, "text");
        }
    }
    put_string(&mut update, text);
    put_var(&mut update, 0); // no deletions
    update
}

/// y-protocols' sync message carrying `update`.
pub fn update_message(update: &[u8]) -> Vec<u8> {
    let mut message = vec![0, 2];
    put_var(&mut message, update.len() as u64);
    message.extend_from_slice(update);
    message
}

/// The first struct's (client, clock) of each update a sync message
/// (step 2 or update) carries; `None` for other messages.
pub fn update_heads(message: &[u8]) -> Option<Vec<(u64, u64)>> {
    if message.len() < 2 || message[0] != 0 || !(message[1] == 1 || message[1] == 2) {
        return None;
    }
    let mut at = 2;
    let _len = read_var(message, &mut at)?;
    let clients = read_var(message, &mut at)?;
    let mut heads = Vec::new();
    // Only the first group can be read without decoding its structs.
    if clients > 0 {
        let _structs = read_var(message, &mut at)?;
        let client = read_var(message, &mut at)?;
        let clock = read_var(message, &mut at)?;
        heads.push((client, clock));
    }
    Some(heads)
}

/// The state vector (client → next clock) of a sync step 1 message.
pub fn state_vector(message: &[u8]) -> Option<std::collections::BTreeMap<u64, u64>> {
    if message.len() < 2 || message[0] != 0 || message[1] != 0 {
        return None;
    }
    let mut at = 2;
    let _len = read_var(message, &mut at)?;
    let count = read_var(message, &mut at)?;
    let mut vector = std::collections::BTreeMap::new();
    for _ in 0..count {
        let client = read_var(message, &mut at)?;
        let clock = read_var(message, &mut at)?;
        vector.insert(client, clock);
    }
    Some(vector)
}

/// The state vector of the document at `url` (`ws://…/yjs/<doc>`), from
/// the sync step 1 the server sends a new client.
pub async fn state_vector_at(url: &str) -> std::collections::BTreeMap<u64, u64> {
    use futures::StreamExt;
    let (mut ws, _) = crate::within(tokio_tungstenite::connect_async(url))
        .await
        .expect("the document's socket opens");
    loop {
        let message = crate::within(ws.next()).await;
        let Some(Ok(message)) = message else {
            panic!("the socket ended before a sync step 1");
        };
        if let tokio_tungstenite::tungstenite::Message::Binary(bytes) = message
            && let Some(vector) = state_vector(&bytes)
        {
            return vector;
        }
    }
}
