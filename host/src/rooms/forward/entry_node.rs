//! The entry node's side of a forwarded connection: the join is sent to
//! the owner node, and the connection gets a `Joined` like any other (so
//! `server::room_socket` serves it unchanged) whose queue a pump fills
//! from the link and whose membership sends on the link.

use std::sync::Arc;

use tokio::sync::{Mutex, oneshot};

use super::{
    Answer, Broken, CALL_TIMEOUT, Incoming, JOIN_TIMEOUT, KEEPALIVE, LINK_LOST, LinkGauge, Message,
    Outgoing, Request, WireCaller, halves, kick_of,
};
use crate::metrics::Metrics;
use crate::objects::mailbox::{self, TrySendError};
use crate::rooms::{
    Delivery, Frame, JoinError, JoinRequest, Joined, Kick, Line, Membership, RoomAddress, RoomGone,
    RoomHub,
};
use crate::storage::Cluster;

/// Joins `room` on `node`, which owns it.
pub async fn join(
    hub: &Arc<RoomHub>,
    cluster: &Arc<dyn Cluster>,
    node: String,
    room: &RoomAddress<'_>,
    request: JoinRequest,
) -> Result<Joined, JoinError> {
    let unavailable = |e: crate::storage::StorageError| JoinError::Unavailable(e.to_string());
    let link = cluster.open_link().await.map_err(unavailable)?;
    let wire = Request {
        link: link.id.clone(),
        plugin: room.plugin.to_string(),
        prefix: room.prefix.to_string(),
        room: room.id.to_string(),
        since: request.since,
        caller: request.caller.as_deref().map(WireCaller::from),
        headers: crate::util::header_pairs(&request.headers),
        dialect: request.dialect,
        trace: crate::telemetry::current_traceparent(),
    };
    let body = serde_json::to_vec(&wire).expect("a join encodes");
    let unreachable = |reason: String| JoinError::Unreachable {
        node: node.clone(),
        reason,
    };
    let answered = (cluster
        .call(&node, super::SERVICE, body.into(), CALL_TIMEOUT)
        .await)
        .map_err(|e| unreachable(e.to_string()))?;
    let answer = |bytes: &[u8]| {
        serde_json::from_slice::<Answer>(bytes)
            .map_err(|e| JoinError::Unavailable(format!("node {node} answered a join with {e}")))
    };
    match answer(&answered)? {
        Answer::Accepted => {}
        Answer::Refused(refusal) => return Err(refusal),
        Answer::Joined { .. } => {
            return Err(JoinError::Unavailable("a join answered early".into()));
        }
    }
    // The join itself (a room handler's on-connect, maybe) answers on the
    // link.
    let (outgoing, mut incoming) = halves(link);
    let connection = match tokio::time::timeout(JOIN_TIMEOUT, incoming.next()).await {
        Ok(Ok(Message::Answer(bytes))) => match answer(&bytes)? {
            Answer::Joined { connection } => connection,
            Answer::Refused(refusal) => return Err(refusal),
            Answer::Accepted => return Err(JoinError::Unavailable("a join accepted twice".into())),
        },
        Ok(_) => {
            return Err(unreachable(
                "the link broke before the join's answer".into(),
            ));
        }
        Err(_) => {
            return Err(unreachable(format!(
                "no answer to the join in {JOIN_TIMEOUT:?}"
            )));
        }
    };
    let limits = room.limits.clone();
    let outgoing = Arc::new(Mutex::new(outgoing));
    let (queue_tx, queue) = mailbox::channel(limits.send_queue, limits.send_queue_bytes);
    let (kick, kicked) = oneshot::channel();
    let (left, gone) = oneshot::channel();
    let pump = Pump {
        outgoing: outgoing.clone(),
        incoming,
        queue: queue_tx,
        kick: Some(kick),
        plugin: room.plugin.into(),
        metrics: hub.metrics.clone(),
        stopping: hub.rooms.stop_signal(),
        _gauge: LinkGauge::new(&hub.metrics, room.plugin, "entry"),
    };
    tokio::spawn(pump.run(gone));
    Ok(Joined {
        connection: connection.into(),
        hello: Vec::new(),
        binary: room.protocol.binary(),
        catch_up: None,
        queue,
        kicked,
        membership: Membership {
            line: Line::Remote(Up {
                outgoing,
                _left: left,
            }),
            _socket: None,
            joined_in: None,
        },
        limits,
    })
}

/// A forwarded member's line to the owner node. Dropping it (the client
/// is gone) tells the pump, which tells the owner.
pub struct Up {
    outgoing: Arc<Mutex<Outgoing>>,
    _left: oneshot::Sender<()>,
}

impl Up {
    pub async fn send(&self, frame: Frame) -> Result<(), RoomGone> {
        let mut outgoing = self.outgoing.lock().await;
        outgoing
            .send(&Message::Frame(frame))
            .await
            .map_err(|_| RoomGone)
    }
}

/// Moves what the owner node sends into the connection's queue, and
/// keeps the link alive.
struct Pump {
    outgoing: Arc<Mutex<Outgoing>>,
    incoming: Incoming,
    queue: mailbox::Sender<Delivery>,
    kick: Option<oneshot::Sender<Kick>>,
    plugin: Arc<str>,
    metrics: Arc<Metrics>,
    stopping: tokio::sync::watch::Receiver<bool>,
    _gauge: LinkGauge,
}

/// How a pump ended.
enum Ended {
    /// The client went away: the owner is told.
    Left,
    /// The connection is closed with this; the owner is told unless it
    /// said so itself.
    Kicked { kick: Kick, tell_owner: bool },
}

impl Pump {
    async fn run(mut self, mut gone: oneshot::Receiver<()>) {
        let tell_owner = match self.pump(&mut gone).await {
            Ended::Left => true,
            Ended::Kicked { kick, tell_owner } => {
                if let Some(tx) = self.kick.take() {
                    let _ = tx.send(kick);
                }
                tell_owner
            }
        };
        if tell_owner {
            let close = Message::Close {
                code: 1000,
                reason: "the client left".into(),
            };
            let _ = self.outgoing.lock().await.send(&close).await;
        }
    }

    async fn pump(&mut self, gone: &mut oneshot::Receiver<()>) -> Ended {
        let mut tick = tokio::time::interval(KEEPALIVE / 2);
        // This node is stopping: its forwarded clients are closed as its
        // own rooms' are (1001, reconnect), and their owners told.
        let mut stopping = self.stopping.clone();
        let stop = async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        };
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut *gone => return Ended::Left,
                () = &mut stop => {
                    return Ended::Kicked { kick: Kick::STOPPING, tell_owner: true };
                }
                message = self.incoming.next() => match message {
                    Ok(Message::Frame(frame)) => match self.queue.try_send(Delivery::Frame(frame)) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => {
                            Metrics::count(&self.metrics.rooms.closes, &self.plugin, "slow_consumer", 1);
                            return Ended::Kicked { kick: Kick::SLOW_CONSUMER, tell_owner: true };
                        }
                        Err(TrySendError::Closed(_)) => return Ended::Left,
                    },
                    Ok(Message::Close { code, reason }) => {
                        return Ended::Kicked { kick: kick_of(code, &reason), tell_owner: false };
                    }
                    Ok(Message::Keepalive) => {}
                    // The join was answered already: out of place.
                    Ok(Message::Answer(_)) | Err(Broken::Lost) => return self.lost(),
                },
                _ = tick.tick() => {
                    if self.incoming.silent() {
                        return self.lost();
                    }
                    if self.outgoing.lock().await.keep_alive().await.is_err() {
                        return self.lost();
                    }
                }
            }
        }
    }

    fn lost(&self) -> Ended {
        Metrics::count(&self.metrics.rooms.closes, &self.plugin, "link_lost", 1);
        Ended::Kicked {
            kick: LINK_LOST,
            tell_owner: true,
        }
    }
}
