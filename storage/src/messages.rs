//! What nodes of a cluster say to each other directly, besides what they
//! store: a call addressed to one node (a room join it should serve), and
//! links, two one-way lines between two nodes (a forwarded room
//! connection's frames). Neither is stored: a message to a node that is
//! gone is lost, and the callers number what they send (see
//! `runtime::rooms::forward`).

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use super::Result;

/// A request addressed to this node, and where its answer goes.
pub struct Call {
    pub body: Bytes,
    answer: Box<dyn FnOnce(Bytes) -> BoxFuture<'static, ()> + Send>,
}

impl Call {
    pub fn new(
        body: Bytes,
        answer: Box<dyn FnOnce(Bytes) -> BoxFuture<'static, ()> + Send>,
    ) -> Self {
        Self { body, answer }
    }

    /// Sends the answer (lost if the caller stopped waiting).
    pub async fn answer(self, body: Bytes) {
        (self.answer)(body).await
    }
}

/// One end of a link: what it sends reaches the other end in order, or
/// not at all (a message the other end could not take in time is
/// dropped, never reordered).
pub struct Link {
    pub id: String,
    pub sender: Box<dyn LinkSender>,
    /// What the other end sent; ends when the backend closes.
    pub received: BoxStream<'static, Bytes>,
}

#[async_trait::async_trait]
pub trait LinkSender: Send + Sync {
    async fn send(&self, message: Bytes) -> Result<()>;
}
