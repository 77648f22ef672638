//! A room owner's lease on a cluster: renewed while it owns the room;
//! lost, it closes everyone and ends (another node owns the room now).

use std::sync::Arc;
use std::time::Instant;

use super::Owner;

/// A room's lease on a cluster, held by its owner.
pub(in crate::runtime::rooms) struct Lease {
    pub cluster: Arc<dyn crate::storage::Cluster>,
    pub revision: u64,
    pub ttl: std::time::Duration,
}

impl Owner {
    /// Whether the lease was last renewed longer ago than half its time
    /// (it is renewed every quarter): this process was paused or starved,
    /// and another node may own the room by now and have appended to its
    /// log. Nothing is then read or stored before the lease is renewed
    /// (`cluster::a_paused_owner_cannot_append_once_its_lease_is_gone`:
    /// woken, this node re-read the log at a join and appended after the
    /// new owner).
    pub(super) fn lease_may_have_lapsed(&self) -> bool {
        self.lease
            .as_ref()
            .is_some_and(|(lease, renewed)| renewed.elapsed() > lease.ttl / 2)
    }

    /// Renews the room's lease; marks the room moved if it is another
    /// node's now, or if it could not be renewed for as long as it lasts
    /// (the store is out of reach: another node may have it by now).
    pub(super) async fn renew_lease(&mut self) {
        let Some((lease, renewed)) = &mut self.lease else {
            return;
        };
        match lease
            .cluster
            .renew_room(&self.name, lease.revision, lease.ttl)
            .await
        {
            Ok(Some(revision)) => {
                lease.revision = revision;
                *renewed = Instant::now();
            }
            Ok(None) => {
                tracing::warn!(room = %self.name, "the room's lease went to another node");
                self.moved = true;
            }
            Err(e) if renewed.elapsed() >= lease.ttl => {
                tracing::warn!(room = %self.name, "the room's lease lapsed: {e}");
                self.moved = true;
            }
            Err(e) => tracing::warn!(room = %self.name, "renewing the room's lease: {e}"),
        }
    }
}
