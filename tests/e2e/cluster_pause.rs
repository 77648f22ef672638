//! An owner that lost its lease cannot append: a node paused (SIGSTOP)
//! while it owns a room, another node takes the room, and the paused node,
//! woken, has what its client sends refused and the client sent to the new
//! owner.
//!
//! A binary of its own, so that it runs alone: it pauses a process for
//! the lease's two seconds, and beside the other cluster tests (eight
//! clusters of nodes at once on two cores) it failed about one run in five,
//! before and after the owned-object core (issue 35; the cause is not yet
//! found), where alone it has not.

use spike_e2e::cluster::{Cluster, events, join_when_open};
use spike_e2e::rooms::{ROOMS, RoomClient, ws_url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_cannot_append_once_its_lease_is_gone() {
    let cluster = Cluster::start(2, &[ROOMS]).await;
    let mut stale = RoomClient::join(&ws_url(&cluster.node(1).url, "/chat/p")).await;
    stale.send("first").await;
    events(&mut stale, 1, 1).await;
    cluster.node(1).signal("STOP");
    // Node 2 takes the room once node 1's lease lapses, and appends.
    let mut fresh = join_when_open(cluster.node(2), "/chat/p?since=1").await;
    fresh.send("second").await;
    assert_eq!(events(&mut fresh, 2, 1).await, ["second"]);
    cluster.node(1).signal("CONT");
    // Node 1 wakes up still thinking it owns the room: what its client
    // sends is not stored, and the client is told to reconnect.
    stale.send("stale").await;
    let (code, reason) = stale.closed().await;
    assert_eq!(code, 1012, "{reason}");
    fresh.send("third").await;
    assert_eq!(events(&mut fresh, 3, 1).await, ["third"]);
    let mut reader = join_when_open(cluster.node(2), "/chat/p?since=0").await;
    assert_eq!(
        events(&mut reader, 1, 3).await,
        ["first", "second", "third"]
    );
}
