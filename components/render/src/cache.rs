//! Renders kept in blob storage (bucket `renders`), keyed by
//! `RenderRequest::cache_key`, each with its expiry and what the client is
//! told of it in the object's metadata. An expired object is a miss; every
//! store also sweeps a few expired objects of a random slice of the keys
//! (they are hex hashes, so slices are even), which keeps the bucket to
//! about what is alive without a timer.

use spike_sdk::blob::{Bucket, ObjectBody, ObjectMeta, ObjectWriter, PutOptions};
use spike_sdk::http::write_all;
use spike_sdk::render::Rendered;

pub const BUCKET: &str = "renders";

/// How many objects one sweep looks at.
const SWEEP_BATCH: u32 = 20;

/// What the client is told of a render, kept beside its body.
pub struct Facts {
    pub content_type: String,
    pub final_url: String,
    pub status: Option<u16>,
    pub blocked: usize,
}

impl Facts {
    pub fn of(r: &Rendered) -> Self {
        Self {
            content_type: r.content_type.clone(),
            final_url: r.final_url.clone(),
            status: r.status,
            blocked: r.blocked.len(),
        }
    }

    fn from_meta(meta: &ObjectMeta) -> Self {
        let get = |name: &str| {
            meta.metadata
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        Self {
            content_type: meta
                .content_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".into()),
            final_url: get("final-url").unwrap_or_default(),
            status: get("status").and_then(|s| s.parse().ok()),
            blocked: get("blocked").and_then(|s| s.parse().ok()).unwrap_or(0),
        }
    }
}

/// A cached render: its facts, how long it stays fresh, its body.
pub struct Hit {
    pub facts: Facts,
    pub fresh_for_s: u64,
    pub body: ObjectBody,
}

pub fn open() -> Result<Bucket, spike_sdk::Error> {
    Bucket::open(BUCKET)
}

/// The fresh render under `key`, if there is one.
pub fn get(bucket: &Bucket, key: &str, now_ms: u64) -> Result<Option<Hit>, spike_sdk::Error> {
    let Some(body) = bucket.get(key, None)? else {
        return Ok(None);
    };
    let expires = expiry(&body.meta);
    if expires <= now_ms {
        return Ok(None);
    }
    Ok(Some(Hit {
        facts: Facts::from_meta(&body.meta),
        fresh_for_s: (expires - now_ms) / 1000,
        body,
    }))
}

/// Stores a render for `ttl_s` seconds, then sweeps.
pub fn put(
    bucket: &Bucket,
    key: &str,
    facts: &Facts,
    body: &[u8],
    ttl_s: u64,
    now_ms: u64,
) -> Result<(), spike_sdk::Error> {
    let mut metadata = vec![
        (
            "expires-ms".to_string(),
            (now_ms + ttl_s * 1000).to_string(),
        ),
        ("final-url".to_string(), facts.final_url.clone()),
        ("blocked".to_string(), facts.blocked.to_string()),
    ];
    if let Some(status) = facts.status {
        metadata.push(("status".to_string(), status.to_string()));
    }
    let options = PutOptions {
        content_type: Some(facts.content_type.clone()),
        metadata,
    };
    let writer = bucket.put(key, &options)?;
    let sink = writer.body()?;
    let written = write_all(&sink, body);
    drop(sink);
    if written.is_ok() {
        ObjectWriter::finish(writer)?;
    }
    sweep(bucket, now_ms, key);
    Ok(())
}

/// Deletes the expired objects among a few of one random slice of keys.
fn sweep(bucket: &Bucket, now_ms: u64, just_stored: &str) {
    let slice = format!(
        "{:x}",
        spike_sdk::wasi::random::random::get_random_u64() % 16
    );
    let Ok(page) = bucket.list(&slice, None, SWEEP_BATCH) else {
        return;
    };
    for meta in page.objects {
        if meta.key != just_stored && expiry(&meta) <= now_ms {
            let _ = bucket.delete(&meta.key);
        }
    }
}

fn expiry(meta: &ObjectMeta) -> u64 {
    meta.metadata
        .iter()
        .find(|(k, _)| k == "expires-ms")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}
