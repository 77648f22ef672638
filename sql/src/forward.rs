//! Work for a database another node of the cluster owns: sent to that
//! node's `sql` service over the cluster's calls, run there as local work
//! is, and its answer sent back. The owner node answers `NotOwner` if the
//! database moved on meanwhile (the caller asks again, and finds the new
//! owner), never forwards it further.
//!
//! A call and its answer carry at most `MAX_INLINE` bytes themselves
//! (NATS's messages are 1 MiB at most): a bigger one (a 16 MiB blob
//! parameter, a result of many rows) goes through the blob store, and the
//! message names it (`wrap`, `unwrap`).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use spike_storage::{BlobBackend, Call, Cluster, Quota, StorageError};
use tokio::io::AsyncReadExt;

use crate::owner::Answer;
use crate::run::Work;
use crate::{Databases, Here};

/// The calls' service on every node.
pub const SERVICE: &str = "sql";
/// How long an entry node waits for the owner's answer: longer than any
/// statement may run, and a restore.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The most a call or an answer carries in its own message.
const MAX_INLINE: usize = 512 * 1024;
/// Where bigger ones wait for the other node (`#`: in no database's name).
const PARCELS: &str = "#calls/";
const INLINE: u8 = 0;
const IN_BLOB: u8 = 1;

/// `bytes` as a message: themselves, or the key of a blob that holds them.
pub async fn wrap(blobs: &dyn BlobBackend, bytes: Bytes) -> Result<Bytes, StorageError> {
    let mut out = BytesMut::new();
    if bytes.len() <= MAX_INLINE {
        out.extend_from_slice(&[INLINE]);
        out.extend_from_slice(&bytes);
        return Ok(out.freeze());
    }
    let key = format!("{PARCELS}{}", spike_storage::util::unique_suffix());
    let mut upload = blobs.upload().await?;
    upload.write(&bytes).await?;
    upload
        .commit(crate::log::BUCKET, &key, None, Vec::new(), Quota::NONE)
        .await?;
    out.extend_from_slice(&[IN_BLOB]);
    out.extend_from_slice(key.as_bytes());
    Ok(out.freeze())
}

/// What `wrap` made into a message (a blob read, and removed).
pub async fn unwrap(blobs: &dyn BlobBackend, message: Bytes) -> Result<Bytes, StorageError> {
    let corrupt = || StorageError::Corrupt("a forwarded SQL call".into());
    match message.first() {
        Some(&INLINE) => Ok(message.slice(1..)),
        Some(&IN_BLOB) => {
            let key = std::str::from_utf8(&message[1..]).map_err(|_| corrupt())?;
            let object = (blobs.open(crate::log::BUCKET, key).await?).ok_or_else(corrupt)?;
            let mut body = object.body.range(0, object.info.size).await?;
            let mut bytes = Vec::with_capacity(object.info.size as usize);
            (body.read_to_end(&mut bytes).await).map_err(StorageError::io("reading a parcel"))?;
            blobs.delete(crate::log::BUCKET, key).await?;
            Ok(bytes.into())
        }
        _ => Err(corrupt()),
    }
}

#[derive(Serialize, Deserialize)]
pub struct Request {
    pub database: String,
    pub work: Work,
    /// The caller's `traceparent`, if its work is traced. Last: a node of
    /// the version before reads the fields it knows and ignores it.
    pub trace: Option<String>,
}

/// A request from a node of the version before traces.
#[derive(Deserialize)]
struct Untraced {
    database: String,
    work: Work,
}

/// A forwarded request, of this version or the one before.
fn request(bytes: &[u8]) -> Result<Request, String> {
    decode::<Request>(bytes).or_else(|e| match decode::<Untraced>(bytes) {
        Ok(Untraced { database, work }) => Ok(Request {
            database,
            work,
            trace: None,
        }),
        Err(_) => Err(e),
    })
}

#[derive(Serialize, Deserialize)]
pub enum Reply {
    Answer(Answer),
    /// This node does not own the database (any more).
    NotOwner,
    /// The request could not be read.
    Malformed(String),
}

pub fn encode<T: Serialize>(value: &T) -> Bytes {
    postcard::to_stdvec(value)
        .expect("a request or reply encodes")
        .into()
}

pub fn decode<T: for<'a> Deserialize<'a>>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| e.to_string())
}

/// Answers the work other nodes forward to this one, until the host
/// stops.
pub async fn serve(databases: Arc<Databases>, cluster: Arc<dyn Cluster>) {
    let mut stopping = databases.directory.stop_signal();
    loop {
        let listen = async {
            match cluster.calls(SERVICE).await {
                Ok(mut calls) => {
                    while let Some(call) = calls.next().await {
                        tokio::spawn(answer(databases.clone(), call));
                    }
                    tracing::warn!("SQL calls from other nodes stopped coming: listening again");
                }
                Err(e) => tracing::warn!("cannot listen for other nodes' SQL calls: {e}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        tokio::select! {
            _ = listen => {}
            _ = stopping.wait_for(|stopping| *stopping) => return,
        }
    }
}

async fn answer(databases: Arc<Databases>, call: Call) {
    let blobs = databases.storage.blobs.clone();
    let request = unwrap(&*blobs, call.body.clone()).await;
    let reply = match request.map(|bytes| self::request(&bytes)) {
        Err(e) => Reply::Malformed(e.to_string()),
        Ok(Err(e)) => Reply::Malformed(e),
        Ok(Ok(request)) => {
            let span = (databases.tracing.get()).map_or_else(tracing::Span::none, |t| {
                (t.continued)(request.trace.as_deref())
            });
            let ran = databases.run_here(&request.database, request.work);
            match tracing::Instrument::instrument(ran, span).await {
                Here::Done(answer) => Reply::Answer(answer),
                Here::Elsewhere(..) => Reply::NotOwner,
            }
        }
    };
    let message = match wrap(&*blobs, encode(&reply)).await {
        Ok(message) => message,
        Err(e) => {
            tracing::warn!("answering a forwarded SQL call: {e}");
            let why = format!("the owner ran the work but could not send its answer: {e}");
            let failed = Reply::Answer(Answer::failed(crate::SqlError::Internal(why)));
            let mut small = vec![INLINE];
            small.extend_from_slice(&encode(&failed));
            small.into()
        }
    };
    call.answer(message).await;
}
