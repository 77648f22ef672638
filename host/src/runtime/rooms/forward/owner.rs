//! The owner node's side of forwarded connections: joins called in by
//! other nodes are joined here as local connections are, and each is
//! relayed over its link until one side closes.

use std::sync::Arc;

use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::{
    Answer, Broken, KEEPALIVE, LINK_LOST, LinkGauge, Message, Outgoing, Refusal, Request, halves,
};
use crate::runtime::rooms::{CatchUp, Delivery, JoinRequest, Joined, Kick, RoomAddress, RoomHub};
use crate::storage::{Call, Cluster, Link};

/// Serves the joins other nodes forward to this one, until the host
/// stops.
pub async fn serve(hub: Arc<RoomHub>, cluster: Arc<dyn Cluster>) {
    let mut stopping = hub.stopping.subscribe();
    loop {
        let listen = async {
            match cluster.calls().await {
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

/// Answers one forwarded join, then relays its connection.
async fn answer(hub: Arc<RoomHub>, cluster: Arc<dyn Cluster>, call: Call) {
    let joined = match serde_json::from_slice::<Request>(&call.body) {
        Err(e) => Err(Refusal::Unavailable(format!("a malformed join: {e}"))),
        Ok(request) => join(&hub, &*cluster, request).await,
    };
    match joined {
        Ok((joined, link, plugin)) => {
            let answer = Answer::Joined {
                connection: joined.connection.to_string(),
            };
            call.answer(encode(&answer)).await;
            let gauge = LinkGauge::new(&hub.metrics, &plugin, "owner");
            relay(joined, link).await;
            drop(gauge);
        }
        Err(refusal) => call.answer(encode(&Answer::Refused(refusal))).await,
    }
}

fn encode(answer: &Answer) -> bytes::Bytes {
    serde_json::to_vec(answer)
        .expect("an answer encodes")
        .into()
}

/// Joins the room a forwarded join names, here (never forwarding it
/// again), with the link's end that relays it.
async fn join(
    hub: &Arc<RoomHub>,
    cluster: &dyn Cluster,
    request: Request,
) -> Result<(Joined, Link, Arc<str>), Refusal> {
    let unavailable = |why: String| Refusal::Unavailable(why);
    let slot = (hub.registry.slot(&request.plugin))
        .ok_or_else(|| unavailable(format!("no plugin {} on this node", request.plugin)))?;
    let route = (slot.manifest.rooms.iter())
        .find(|route| route.prefix == request.prefix)
        .ok_or_else(|| {
            unavailable(format!(
                "plugin {} has no room route {} on this node",
                request.plugin, request.prefix
            ))
        })?;
    let address = RoomAddress {
        plugin: &slot.manifest.name,
        route,
        id: &request.room,
    };
    // The link's end first: the entry sends on it as soon as it hears.
    let link =
        (cluster.answer_link(&request.link).await).map_err(|e| unavailable(e.to_string()))?;
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
        dialect: request.dialect.as_deref().and_then(super::dialect_named),
    };
    let joined = hub.join_here(&address, join).await?;
    Ok((joined, link, slot.manifest.name.as_str().into()))
}

/// Relays a joined connection over its link until either side ends it.
async fn relay(joined: Joined, link: Link) {
    let (mut outgoing, mut incoming) = halves(link);
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
                    Err(Broken::Lost) => return Err(Some(LINK_LOST)),
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
async fn send_catch_up(outgoing: &mut Outgoing, mut catch_up: CatchUp) -> Result<(), Option<Kick>> {
    if let Some(snapshot) = catch_up.snapshot.take() {
        outgoing
            .send(&Message::Frame(snapshot))
            .await
            .map_err(|_| None)?;
    }
    loop {
        let page = catch_up.next_page().await.map_err(|e| {
            tracing::error!("room catch-up for another node: {e}");
            Some(Kick::UNAVAILABLE)
        })?;
        if page.is_empty() {
            return Ok(());
        }
        for frame in page {
            outgoing
                .send(&Message::Frame(frame))
                .await
                .map_err(|_| None)?;
        }
    }
}
