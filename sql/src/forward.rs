//! Work for a database another node of the cluster owns: sent to that
//! node's `sql` service over the cluster's calls, run there as local work
//! is, and its answer sent back. The owner node answers `NotOwner` if the
//! database moved on meanwhile (the caller asks again, and finds the new
//! owner), never forwards it further.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use spike_storage::{Call, Cluster};

use crate::owner::Answer;
use crate::run::Work;
use crate::{Databases, Here};

/// The calls' service on every node.
pub const SERVICE: &str = "sql";
/// How long an entry node waits for the owner's answer: longer than any
/// statement may run, and a restore.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Serialize, Deserialize)]
pub struct Request {
    pub database: String,
    pub work: Work,
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
    let reply = match decode::<Request>(&call.body) {
        Err(e) => Reply::Malformed(e),
        Ok(request) => match databases.run_here(&request.database, request.work).await {
            Here::Done(answer) => Reply::Answer(answer),
            Here::Elsewhere(..) => Reply::NotOwner,
        },
    };
    call.answer(encode(&reply)).await;
}
