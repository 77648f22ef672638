//! Calls and links over core NATS subjects (not JetStream: nothing is
//! stored): a call to service S of node N is a request on
//! `{P}.node.<N>.<S>`; link L is
//! `{P}.link.L.open` (what the opening end sends) and `{P}.link.L.answer`
//! (what the answering end sends). One client connection publishes in
//! order and the server keeps a publisher's order on a subject, so a link
//! only loses messages (a subscriber too slow for its buffer), which the
//! caller's numbering detects.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use super::names::token;
use super::{NatsBackend, OrFailed};
use crate::{Call, Link, LinkSender, Result, StorageError};

fn node_subject(backend: &NatsBackend, node: &str, service: &str) -> String {
    format!(
        "{}.node.{}.{}",
        backend.prefix(),
        token(node),
        token(service)
    )
}

fn link_subject(backend: &NatsBackend, id: &str, end: &str) -> String {
    format!("{}.link.{}.{end}", backend.prefix(), token(id))
}

pub async fn calls(
    backend: &NatsBackend,
    node: &str,
    service: &str,
) -> Result<BoxStream<'static, Call>> {
    let client = backend.client();
    let calls = client
        .subscribe(node_subject(backend, node, service))
        .await
        .or_failed("listening for calls")?;
    Ok(calls
        .filter_map(move |message| {
            let client = client.clone();
            async move {
                let reply = message.reply?;
                let answer = move |body: Bytes| -> futures::future::BoxFuture<'static, ()> {
                    Box::pin(async move {
                        if let Err(e) = client.publish(reply, body).await {
                            tracing::warn!("answering a call: {e}");
                        }
                    })
                };
                Some(Call::new(message.payload, Box::new(answer)))
            }
        })
        .boxed())
}

pub async fn call(
    backend: &NatsBackend,
    node: &str,
    service: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<Bytes> {
    let request = async_nats::Request::new()
        .payload(body)
        .timeout(Some(timeout));
    let answer = backend
        .client()
        .send_request(node_subject(backend, node, service), request)
        .await
        .map_err(|e| match e.kind() {
            async_nats::RequestErrorKind::NoResponders => {
                StorageError::NoResponder(format!("node {node} does not answer {service} calls"))
            }
            _ => StorageError::Backend(format!("calling node {node}: {e}")),
        })?;
    Ok(answer.payload)
}

/// One end of a link: it receives on `theirs` and sends on `ours`.
pub async fn link(backend: &NatsBackend, id: String, opening: bool) -> Result<Link> {
    let (ours, theirs) = match opening {
        true => ("open", "answer"),
        false => ("answer", "open"),
    };
    let client = backend.client();
    let received = client
        .subscribe(link_subject(backend, &id, theirs))
        .await
        .or_failed("opening a link")?;
    // The subscription is sent to the server before anything this client
    // publishes next (one connection, in order): the other end's first
    // message, sent after it hears of the link from us, finds it there.
    Ok(Link {
        sender: Box::new(Sender {
            client,
            subject: link_subject(backend, &id, ours),
        }),
        id,
        received: received.map(|m| m.payload).boxed(),
    })
}

/// A new link id, unique in the cluster (the NUID of a new inbox).
pub fn new_link_id(backend: &NatsBackend) -> String {
    let inbox = backend.client().new_inbox();
    let id = inbox.rsplit('.').next().unwrap_or(&inbox);
    id.to_string()
}

struct Sender {
    client: async_nats::Client,
    subject: String,
}

#[async_trait::async_trait]
impl LinkSender for Sender {
    async fn send(&self, message: Bytes) -> Result<()> {
        self.client
            .publish(self.subject.clone(), message)
            .await
            .or_failed("sending on a link")
    }
}
