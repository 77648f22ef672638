//! Spike nodes (separate processes) on one JetStream server: what is
//! written through one node is read through another, a plugin or a
//! manifest pushed to one node serves from every node, quotas are the cluster's, and a room
//! has one owner, which clients of every node reach through their own
//! node: another node takes it when its owner dies (an owner that lost its
//! lease cannot append: `cluster_pause.rs`).

use std::time::{Duration, Instant};

use serde_json::json;
use spike_e2e::cluster::{Cluster, events, join_when_open};
use spike_e2e::node::{YJS, YjsPeer};
use spike_e2e::rooms::{ROOMS, RoomClient, ws_url};
use spike_e2e::{ADMIN_TOKEN, HELLO, client, guest, send, send_json, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_and_blobs_written_through_one_node_are_read_through_another() {
    let cluster = Cluster::start(3, &[HELLO]).await;
    // The counter's increments through all three nodes make one sequence.
    let mut seen = Vec::new();
    for round in 0..3 {
        for i in 1..=3 {
            let (status, body) =
                send_json(client().post(cluster.node(i).at("/hello/counter"))).await;
            assert_eq!(status, 200, "round {round}, node {i}: {body}");
            seen.push(body["count"].as_i64().unwrap());
        }
    }
    assert_eq!(seen, (1..=9).collect::<Vec<_>>());

    let put = client()
        .put(cluster.node(1).at("/hello/files/notes.txt"))
        .body("written through node 1");
    let (status, body) = send(put).await;
    assert!(status == 200 || status == 201, "{status} {body}");
    let (status, body) = send(client().get(cluster.node(3).at("/hello/files/notes.txt"))).await;
    assert_eq!((status, body.as_str()), (200, "written through node 1"));
    // A range of it, through the third node.
    let ranged = client()
        .get(cluster.node(3).at("/hello/files/notes.txt"))
        .header("range", "bytes=8-14");
    let (status, body) = send(ranged).await;
    assert_eq!((status, body.as_str()), (206, "through"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_pushed_to_one_node_serves_from_every_node() {
    let cluster = Cluster::start(3, &[HELLO]).await;
    let (_, before) = send(client().get(cluster.node(1).at("/hello"))).await;
    let bytes = std::fs::read(guest("fixture_plain_hello")).unwrap();
    let push = client()
        .put(cluster.node(2).at("/_spike/plugins/hello"))
        .bearer_auth(ADMIN_TOKEN)
        .body(bytes);
    let (status, pushed) = send_json(push).await;
    assert_eq!(status, 200, "{pushed}");
    let sha = pushed["version"]["sha256"].as_str().unwrap().to_string();
    let pushed_at = Instant::now();

    // Every node serves the new version within a few seconds.
    within(async {
        for i in [1, 3] {
            loop {
                let (_, now) = send(client().get(cluster.node(i).at("/hello"))).await;
                if now != before {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    })
    .await;
    let took = pushed_at.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "served everywhere after {took:?}"
    );

    // Each node's list shows every node's active version.
    within(async {
        loop {
            let list = cluster.node(3).plugins().await;
            let hello = list["plugins"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "hello")
                .unwrap()
                .clone();
            let nodes = hello["nodes"].as_object().cloned().unwrap_or_default();
            if nodes.len() == 3 && nodes.values().all(|v| v == sha.as_str()) {
                assert_eq!(list["node"], "node-3");
                assert_eq!(list["nodes"].as_array().unwrap().len(), 3);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;

    // A rollback on node 3 reaches node 1 too.
    let rollback = client()
        .post(cluster.node(3).at("/_spike/plugins/hello/rollback"))
        .bearer_auth(ADMIN_TOKEN);
    let (status, body) = send_json(rollback).await;
    assert_eq!(status, 200, "{body}");
    within(async {
        loop {
            let (_, now) = send(client().get(cluster.node(1).at("/hello"))).await;
            if now == before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_pushed_to_one_node_serves_from_every_node() {
    let cluster = Cluster::start(2, &[HELLO]).await;
    let put_manifest = |node: usize, name: &str, text: &str| {
        client()
            .put(
                cluster
                    .node(node)
                    .at(&format!("/_spike/plugins/{name}/manifest")),
            )
            .bearer_auth(ADMIN_TOKEN)
            .body(text.to_string())
    };
    // A new plugin, whose component file is on no node: it runs once a
    // version is pushed, on every node.
    let manifest = "component = \"greeter.wasm\"\n[[routes]]\nprefix = \"/greet\"\n";
    let (status, body) = send_json(put_manifest(2, "greeter", manifest)).await;
    assert_eq!(
        (status, body["change"].as_str()),
        (200, Some("added")),
        "{body}"
    );
    let bytes = std::fs::read(guest("fixture_plain_hello")).unwrap();
    let push = client()
        .put(cluster.node(2).at("/_spike/plugins/greeter"))
        .bearer_auth(ADMIN_TOKEN)
        .body(bytes);
    let (status, body) = send_json(push).await;
    assert_eq!(status, 200, "{body}");
    within(async {
        loop {
            let (status, _) = send(client().get(cluster.node(1).at("/greet"))).await;
            if status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let written = cluster.plugins_dirs[0].join("greeter.toml");
    assert_eq!(std::fs::read_to_string(written).unwrap(), manifest);

    // A typo is refused with its line, and changes nothing.
    let typo = "component = \"greeter.wasm\"\n[[routes]]\nprefx = \"/greet\"\n";
    let (status, body) = send_json(put_manifest(2, "greeter", typo)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_manifest")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("line 3: "),
        "{body}"
    );
    // So is a route another plugin serves (409), and a manifest that
    // names another plugin.
    let clash = "component = \"greeter.wasm\"\n[[routes]]\nprefix = \"/hello\"\n";
    let (status, body) = send_json(put_manifest(1, "greeter", clash)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("manifest_refused")),
        "{body}"
    );
    let (status, body) = send_json(put_manifest(1, "greeter", "name = \"other\"\n")).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = send(client().get(cluster.node(2).at("/greet"))).await;
    assert_eq!(status, 200);

    // Removed on one node: gone from every node, its file too.
    let remove = client()
        .delete(cluster.node(2).at("/_spike/plugins/greeter"))
        .bearer_auth(ADMIN_TOKEN);
    let (status, body) = send_json(remove).await;
    assert_eq!((status, body["change"].as_str()), (200, Some("removed")));
    within(async {
        loop {
            let (status, _) = send(client().get(cluster.node(1).at("/greet"))).await;
            if status == 404 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(!cluster.plugins_dirs[0].join("greeter.toml").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_quota_is_one_quota_across_nodes() {
    let whoami = spike_e2e::Plugin {
        name: "whoami",
        guest: "fixture_whoami",
        manifest: "[[routes]]\nprefix = \"/whoami\"\n[quotas.calls]\nrequests = 4\nper_s = 60\n",
    };
    let cluster = Cluster::start(3, &[whoami]).await;
    let check = |node: usize, key: &str| {
        client().post(
            cluster
                .node(node)
                .at(&format!("/whoami/quota?quota=calls&key={key}&cost=1")),
        )
    };
    // Four calls of one key through three nodes use up one allowance of
    // four; the fifth, through any node, is refused.
    let mut remaining = Vec::new();
    for node in [1, 2, 3, 1] {
        let (status, body) = send_json(check(node, "alice")).await;
        assert_eq!((status, &body["allowed"]), (200, &json!(true)), "{body}");
        remaining.push(body["remaining"].as_u64().unwrap());
    }
    assert_eq!(remaining, [3, 2, 1, 0]);
    for node in [2, 3] {
        let (_, body) = send_json(check(node, "alice")).await;
        assert_eq!(body["allowed"], false, "{body}");
        let wait = body["retry_after_ms"].as_u64().unwrap();
        assert!((14_000..=15_000).contains(&wait), "{wait}");
    }
    // Another key has its own allowance.
    let (_, body) = send_json(check(3, "bob")).await;
    assert_eq!(
        (body["allowed"].clone(), body["remaining"].clone()),
        (json!(true), json!(3))
    );

    // Twelve calls at once through three nodes: exactly four allowed.
    let calls = (0..12).map(|i| send_json(check(i % 3 + 1, "carol")));
    let answers = futures::future::join_all(calls).await;
    let allowed = answers
        .iter()
        .filter(|(status, body)| *status == 200 && body["allowed"] == true)
        .count();
    assert_eq!(allowed, 4, "{answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_different_nodes_see_one_order() {
    let mut cluster = Cluster::start(3, &[ROOMS]).await;
    // Node 1 owns the room (its first client came there); the others
    // forward their clients to it.
    let mut clients = Vec::new();
    for i in 1..=3 {
        clients.push(RoomClient::join(&ws_url(&cluster.node(i).url, "/chat/o")).await);
    }
    let ids: Vec<String> = clients.iter().map(RoomClient::id).collect();
    // Everyone sees everyone: presence crosses nodes too.
    assert_eq!(
        clients[2].welcome["member_count"], 3,
        "{}",
        clients[2].welcome
    );
    let sends = clients
        .iter_mut()
        .enumerate()
        .map(|(i, client)| async move {
            for k in 0..10 {
                client.send(&format!("{i}:{k}")).await;
            }
        });
    futures::future::join_all(sends).await;
    let mut orders = Vec::new();
    for client in &mut clients {
        let mut order = Vec::new();
        for seq in 1..=30u64 {
            let event = client.next_event().await;
            assert_eq!(event["seq"], seq, "{event}");
            order.push((event["from"].to_string(), event["data"].to_string()));
        }
        orders.push(order);
    }
    assert_eq!(orders[0], orders[1]);
    assert_eq!(orders[0], orders[2]);
    // Each client's own messages keep the order it sent them in, and
    // carry its id, whichever node it came to.
    for (i, id) in ids.iter().enumerate() {
        let own: Vec<&str> = orders[0]
            .iter()
            .filter(|(from, _)| from.trim_matches('"') == id)
            .map(|(_, data)| data.trim_matches('"'))
            .collect();
        let sent: Vec<String> = (0..10).map(|k| format!("{i}:{k}")).collect();
        assert_eq!(own, sent, "client {i} on node {}", i + 1);
    }
    // A forwarded client that leaves is gone from the room on its owner.
    let leaver = clients.pop().unwrap();
    leaver.close().await;
    let leave = clients[0].next_of("leave").await;
    assert_eq!(leave["connection"], ids[2].as_str());
    // A node that stops closes its forwarded clients as its own (1001),
    // and their owner sees them leave.
    let mut stopped = RoomClient::join(&ws_url(&cluster.node(3).url, "/chat/o")).await;
    let stopped_id = stopped.id();
    clients[0].next_of("join").await;
    cluster.node(3).signal("TERM");
    let (code, reason) = stopped.closed().await;
    assert_eq!(code, 1001, "{reason}");
    let leave = clients[0].next_of("leave").await;
    assert_eq!(leave["connection"], stopped_id.as_str());
    // So is one whose node died (its link falls silent).
    cluster.node_mut(2).kill();
    let leave = clients[0].next_of("leave").await;
    assert_eq!(leave["connection"], ids[1].as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yjs_document_edited_through_two_nodes_converges() {
    let cluster = Cluster::start(2, &[YJS]).await;
    let mut ann = YjsPeer::start(&ws_url(&cluster.node(1).url, "/yjs"), "doc").await;
    ann.synced().await;
    let mut bob = YjsPeer::start(&ws_url(&cluster.node(2).url, "/yjs"), "doc").await;
    bob.synced().await;
    ann.edit_together(&mut bob).await;
    ann.command(json!({"op": "presence", "state": {"user": "ann"}}))
        .await;
    bob.until("ann's presence", |d| d["peers"] == json!([{"user": "ann"}]))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_goes_on_from_another_node_when_its_owner_is_killed() {
    let mut cluster = Cluster::start(3, &[ROOMS]).await;
    let mut writer = RoomClient::join(&ws_url(&cluster.node(1).url, "/chat/k")).await;
    // A client of node 3, forwarded to node 1.
    let mut forwarded = RoomClient::join(&ws_url(&cluster.node(3).url, "/chat/k")).await;
    for k in 1..=10 {
        writer.send(&format!("m{k}")).await;
    }
    // What the writer saw come back is acknowledged.
    events(&mut writer, 1, 10).await;
    events(&mut forwarded, 1, 10).await;
    cluster.node_mut(1).kill();
    let killed = Instant::now();
    let mut writer = join_when_open(cluster.node(2), "/chat/k?since=10").await;
    writer.send("after").await;
    let after = writer.next_event().await;
    let took = killed.elapsed();
    assert_eq!(
        (after["seq"].as_u64(), after["data"].as_str()),
        (Some(11), Some("after"))
    );
    assert!(
        took < Duration::from_secs(6),
        "the room took {took:?} to accept events"
    );
    // The forwarded client learns that its room's node is gone, and comes
    // back through node 3 (now forwarded to node 2) for what it missed.
    let (code, reason) = forwarded.closed().await;
    assert_eq!(code, 1012, "{reason}");
    let mut forwarded = join_when_open(cluster.node(3), "/chat/k?since=10").await;
    assert_eq!(events(&mut forwarded, 11, 1).await, ["after"]);
    // The whole log, in order, with no gap, from the room's new owner,
    // through another node.
    let mut reader = join_when_open(cluster.node(3), "/chat/k?since=0").await;
    let mut want: Vec<String> = (1..=10).map(|k| format!("m{k}")).collect();
    want.push("after".into());
    assert_eq!(events(&mut reader, 1, 11).await, want);
}
