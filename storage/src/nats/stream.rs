//! The two JetStream moves the backend is built of: a publish with its
//! conditions, and reading a filtered stream up to where it stands now.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::header::{NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_MESSAGE_TTL};
use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy, push};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, stream::Stream};
use bytes::Bytes;
use futures::StreamExt;

use super::{OrFailed, Result};

/// Longest wait for the next message of a read that the server said has
/// more to deliver.
const READ_STALL: Duration = Duration::from_secs(30);

/// How a conditional publish ended.
pub enum Published {
    /// Stored as this stream sequence.
    Stored(u64),
    /// The subject's last sequence was not the one expected.
    Conflict,
}

/// Publishes `payload` to `subject` and waits for JetStream's ack.
/// `expect`: the subject's last sequence must be this (0: no message);
/// `ttl`: the server removes the message after it (whole seconds, at
/// least 1).
pub async fn publish(
    js: &jetstream::Context,
    subject: String,
    payload: Bytes,
    expect: Option<u64>,
    ttl: Option<Duration>,
) -> Result<Published> {
    send(js, subject, HeaderMap::new(), payload, expect, ttl).await
}

/// Removes a KV key, as the KV API's purge does (the marker rolls up
/// what came before), if its last sequence is still `expect` (any, if
/// `None`). The marker
/// itself lapses after `MARKER_TTL`: no tombstones pile up for keys
/// written once.
pub async fn purge(
    js: &jetstream::Context,
    subject: String,
    expect: Option<u64>,
) -> Result<Published> {
    let mut headers = HeaderMap::new();
    headers.insert("KV-Operation", "PURGE");
    headers.insert(async_nats::header::NATS_ROLLUP, "sub");
    send(
        js,
        subject,
        headers,
        Bytes::new(),
        expect,
        Some(super::MARKER_TTL),
    )
    .await
}

async fn send(
    js: &jetstream::Context,
    subject: String,
    mut headers: HeaderMap,
    payload: Bytes,
    expect: Option<u64>,
    ttl: Option<Duration>,
) -> Result<Published> {
    if let Some(seq) = expect {
        headers.insert(
            NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            seq.to_string().as_str(),
        );
    }
    if let Some(ttl) = ttl {
        let secs = ttl.as_millis().div_ceil(1000).max(1);
        headers.insert(NATS_MESSAGE_TTL, secs.to_string().as_str());
    }
    let ack = match js
        .publish_with_headers(subject.clone(), headers, payload)
        .await
    {
        Ok(ack) => ack.await,
        Err(e) => Err(e),
    };
    match ack {
        Ok(ack) => Ok(Published::Stored(ack.sequence)),
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(Published::Conflict),
        Err(e) => Err(e).or_failed(format!("publishing to {subject}")),
    }
}

/// A message as read back.
pub struct Read {
    pub subject: String,
    pub headers: Option<HeaderMap>,
    pub payload: Bytes,
}

/// Reads the messages of `stream` that match `filter`, from where
/// `deliver` says, up to the last one stored when the read began; `take`
/// sees each and says whether to go on.
pub async fn read_to_now(
    client: &async_nats::Client,
    stream: &Stream,
    filter: String,
    deliver: DeliverPolicy,
    mut take: impl FnMut(Read) -> Result<bool>,
) -> Result<()> {
    let consumer = stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: filter.clone(),
            deliver_policy: deliver,
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .or_failed(format!("reading {filter}"))?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(());
    }
    let mut messages = consumer.messages().await.or_failed("reading")?;
    loop {
        let next = tokio::time::timeout(READ_STALL, messages.next())
            .await
            .or_failed(format!("reading {filter}"))?;
        let Some(message) = next else {
            return Err(super::StorageError::Backend(format!(
                "reading {filter}: the server ended the read"
            )));
        };
        let message = message.or_failed(format!("reading {filter}"))?;
        let info = message
            .info()
            .or_failed("a message without its stream info")?;
        let pending = info.pending;
        let message = message.message;
        let more = take(Read {
            subject: message.subject.to_string(),
            headers: message.headers,
            payload: message.payload,
        })?;
        if pending == 0 || !more {
            return Ok(());
        }
    }
}

/// Whether a KV message marks its key removed (by a delete, a purge, or
/// the server when the key's TTL ran out).
pub fn is_removal(headers: Option<&HeaderMap>) -> bool {
    headers.is_some_and(|h| {
        h.get("KV-Operation").is_some() || h.get(async_nats::header::NATS_MARKER_REASON).is_some()
    })
}

/// The last message of every key under `filter` in a KV bucket, removed
/// keys left out: `(KV key, value)`.
pub async fn kv_values(
    client: &async_nats::Client,
    store: &jetstream::kv::Store,
    filter: &str,
) -> Result<Vec<(String, Bytes)>> {
    let mut out = Vec::new();
    let subject_prefix = store.prefix.clone();
    read_to_now(
        client,
        &store.stream,
        format!("{subject_prefix}{filter}"),
        DeliverPolicy::LastPerSubject,
        |m| {
            if !is_removal(m.headers.as_ref())
                && let Some(key) = m.subject.strip_prefix(&subject_prefix)
            {
                out.push((key.to_string(), m.payload));
            }
            Ok(true)
        },
    )
    .await?;
    Ok(out)
}

/// A KV key's last message: its value (`None` if absent or removed) and
/// the revision a conditional write over it expects (0: no message).
pub async fn last(store: &jetstream::kv::Store, key: &str) -> Result<(Option<Bytes>, u64)> {
    use async_nats::jetstream::kv::Operation;
    let found = store.entry(key).await.or_failed(format!("reading {key}"))?;
    Ok(match found {
        None => (None, 0),
        Some(e) if e.operation != Operation::Put => (None, e.revision),
        Some(e) => (Some(e.value), e.revision),
    })
}

/// The subject of `key` in a KV bucket (what a write to it publishes to).
pub fn subject(store: &jetstream::kv::Store, key: &str) -> String {
    format!("{}{key}", store.prefix)
}
