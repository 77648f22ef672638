//! An owner's lease on a cluster: while it holds it, no other node owns
//! the object. Renewed every quarter of its time; lost, or not renewed for
//! as long as it lasts, the object has moved.

use std::sync::Arc;
use std::time::{Duration, Instant};

use spike_storage::Cluster;

/// An object's lease on a cluster, held by its owner.
pub struct Lease {
    cluster: Arc<dyn Cluster>,
    key: String,
    revision: u64,
    ttl: Duration,
    renewed: Instant,
}

/// How a renewal went.
#[derive(Debug, PartialEq, Eq)]
pub enum Renewal {
    Held,
    /// Another node owns the object now, or may by now.
    Lost,
}

impl Lease {
    pub(super) fn new(
        cluster: Arc<dyn Cluster>,
        key: String,
        revision: u64,
        ttl: Duration,
    ) -> Self {
        Self {
            cluster,
            key,
            revision,
            ttl,
            renewed: Instant::now(),
        }
    }

    /// How often it is renewed.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 4
    }

    /// Whether it was last renewed longer ago than half its time (it is
    /// renewed every quarter): this process was paused or starved, and
    /// another node may own the object by now and have written to its
    /// log. Nothing is then read or stored before it is renewed
    /// (`cluster::a_paused_owner_cannot_append_once_its_lease_is_gone`:
    /// woken, a node re-read a room's log at a join and appended after the
    /// new owner).
    pub fn may_have_lapsed(&self) -> bool {
        self.renewed.elapsed() > self.ttl / 2
    }

    /// Renews it. `Lost` if it is another node's now, or if it could not
    /// be renewed for as long as it lasts (the store is out of reach:
    /// another node may have it by now).
    pub async fn renew(&mut self) -> Renewal {
        match (self.cluster)
            .renew_lease(&self.key, self.revision, self.ttl)
            .await
        {
            Ok(Some(revision)) => {
                self.revision = revision;
                self.renewed = Instant::now();
                Renewal::Held
            }
            Ok(None) => {
                tracing::warn!(object = %self.key, "the lease went to another node");
                Renewal::Lost
            }
            Err(e) if self.renewed.elapsed() >= self.ttl => {
                tracing::warn!(object = %self.key, "the lease lapsed: {e}");
                Renewal::Lost
            }
            Err(e) => {
                tracing::warn!(object = %self.key, "renewing the lease: {e}");
                Renewal::Held
            }
        }
    }
}
