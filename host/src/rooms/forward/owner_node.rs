//! The owner node's side of forwarded connections: joins called in by
//! other nodes are joined here as local connections are, and each is
//! relayed over its link until one side closes.

use std::sync::Arc;

use tracing::Instrument;

use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::{
    Answer, Broken, Incoming, KEEPALIVE, LINK_LOST, LinkGauge, Message, Outgoing, Request, halves,
};
use crate::rooms::{
    CatchUp, Delivery, JoinError, JoinRequest, Joined, Kick, RoomAddress, RoomHub, RoomLimits,
    RoomProtocol,
};
use crate::storage::{Call, Cluster};

/// Serves the joins other nodes forward to this one, until the host
/// stops.
pub async fn serve(hub: Arc<RoomHub>, cluster: Arc<dyn Cluster>) {
    let mut stopping = hub.rooms.stop_signal();
    loop {
        let listen = async {
            match cluster.calls(super::SERVICE).await {
                Ok(mut calls) => {
                    while let Some(call) = calls.next().await {
                        tokio::spawn(answer(hub.clone(), cluster.clone(), call));
                    }
                    tracing::warn!("calls from other nodes stopped coming: listening again");
                }
                Err(e) => tracing::warn!("cannot listen for other nodes' joins: {e}"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        };
        tokio::select! {
            _ = listen => {}
            _ = stopping.wait_for(|stopping| *stopping) => return,
        }
    }
}

/// Answers one forwarded join: the call at once (this node has the link),
/// then the join itself over the link, then relays the connection.
async fn answer(hub: Arc<RoomHub>, cluster: Arc<dyn Cluster>, call: Call) {
    let refused = |refusal| encode(&Answer::Refused(refusal));
    let request = match serde_json::from_slice::<Request>(&call.body) {
        Ok(request) => request,
        Err(e) => {
            let why = format!("a malformed join: {e}");
            return call.answer(refused(JoinError::Unavailable(why))).await;
        }
    };
    let route = match hub.plugins.room_route(&request.plugin, &request.prefix) {
        Ok(route) => route,
        Err(why) => return call.answer(refused(JoinError::Unavailable(why))).await,
    };
    // The link's end before the call's answer: the entry waits on it.
    let link = match cluster.answer_link(&request.link).await {
        Ok(link) => link,
        Err(e) => {
            return call
                .answer(refused(JoinError::Unavailable(e.to_string())))
                .await;
        }
    };
    call.answer(encode(&Answer::Accepted)).await;
    let (mut outgoing, incoming) = halves(link);
    let plugin = request.plugin.clone();
    let span = crate::telemetry::continued_span("room join (forwarded)", request.trace.as_deref());
    match join(&hub, route, request).instrument(span).await {
        Ok(joined) => {
            let answer = Answer::Joined {
                connection: joined.connection.to_string(),
            };
            if outgoing
                .send(&Message::Answer(encode(&answer)))
                .await
                .is_ok()
            {
                let _gauge = LinkGauge::new(&hub.metrics, &plugin, "owner");
                relay(joined, outgoing, incoming).await;
            }
        }
        Err(refusal) => {
            let _ = outgoing.send(&Message::Answer(refused(refusal))).await;
        }
    }
}

fn encode(answer: &Answer) -> bytes::Bytes {
    serde_json::to_vec(answer)
        .expect("an answer encodes")
        .into()
}

/// Joins the room a forwarded join names, here (never forwarding it
/// again).
async fn join(
    hub: &Arc<RoomHub>,
    (protocol, limits): (RoomProtocol, RoomLimits),
    request: Request,
) -> Result<Joined, JoinError> {
    let address = RoomAddress {
        plugin: &request.plugin,
        prefix: &request.prefix,
        protocol,
        limits: &limits,
        id: &request.room,
    };
    let mut headers = HeaderMap::new();
    for (name, value) in request.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.append(name, value);
        }
    }
    let join = JoinRequest {
        since: request.since,
        caller: request.caller.map(|c| Arc::new(c.into())),
        headers,
        dialect: request.dialect,
    };
    hub.join_here(&address, join).await
}

/// Relays a joined connection over its link until either side ends it.
async fn relay(joined: Joined, mut outgoing: Outgoing, mut incoming: Incoming) {
    let Joined {
        hello,
        catch_up,
        mut queue,
        mut kicked,
        membership,
        ..
    } = joined;
    let relayed = async {
        for frame in hello {
            outgoing
                .send(&Message::Frame(frame))
                .await
                .map_err(|_| None)?;
        }
        if let Some(catch_up) = catch_up {
            send_catch_up(&mut outgoing, catch_up).await?;
        }
        let mut tick = tokio::time::interval(KEEPALIVE / 2);
        loop {
            tokio::select! {
                biased;
                kick = &mut kicked => return Err(Some(kick.unwrap_or(Kick::STOPPING))),
                delivery = queue.recv() => match delivery {
                    None => return Err(Some(Kick::STOPPING)),
                    Some(Delivery::Frame(frame)) => {
                        outgoing.send(&Message::Frame(frame)).await.map_err(|_| None)?;
                    }
                    Some(Delivery::CatchUp(catch_up)) => {
                        send_catch_up(&mut outgoing, *catch_up).await?;
                    }
                },
                message = incoming.next() => match message {
                    Ok(Message::Frame(frame)) => {
                        if membership.send(frame).await.is_err() {
                            return Err(Some(Kick::STOPPING));
                        }
                    }
                    // The client is gone.
                    Ok(Message::Close { .. }) => return Err(None),
                    Ok(Message::Keepalive) => {}
                    // An answer is the owner's to send, once.
                    Ok(Message::Answer(_)) | Err(Broken::Lost) => return Err(Some(LINK_LOST)),
                },
                _ = tick.tick() => {
                    // The entry node died or was cut off: the member leaves.
                    if incoming.silent() {
                        return Err(None);
                    }
                    outgoing.keep_alive().await.map_err(|_| None)?;
                }
            }
        }
    };
    let ended: Result<(), Option<Kick>> = relayed.await;
    if let Err(Some(kick)) = ended {
        let close = Message::Close {
            code: kick.code,
            reason: kick.reason.into(),
        };
        let _ = outgoing.send(&close).await;
    }
    drop(membership);
}

/// Sends stored events a connection is owed, page by page.
async fn send_catch_up(outgoing: &mut Outgoing, catch_up: CatchUp) -> Result<(), Option<Kick>> {
    let mut frames = std::pin::pin!(catch_up.frames());
    while let Some(frame) = frames.next().await {
        let frame = frame.map_err(|e| {
            tracing::error!("room catch-up for another node: {e}");
            Some(Kick::UNAVAILABLE)
        })?;
        outgoing
            .send(&Message::Frame(frame))
            .await
            .map_err(|_| None)?;
    }
    Ok(())
}
