//! LiveStore sync: unmodified LiveStore clients from npm
//! (`@livestore/adapter-node` with `makeWsSync` of `@livestore/sync-cf`
//! 0.4) syncing through spike, and both wire protocols (0.4's Effect RPC,
//! 0.3's `WSMessage`) at the frame level.

use serde_json::{Value, json};
use spike_e2e::livestore_wire::{event, pull, push};
use spike_e2e::node::LiveStorePeer;
use spike_e2e::rooms::{RoomClient, refused_status, ws_url};
use spike_e2e::tokens::{hs256_tokens, start_with_hs256_auth};
use spike_e2e::*;

const LIVESTORE: Plugin = Plugin {
    name: "livestore",
    guest: "",
    manifest: "[[rooms]]\nprefix = \"/livestore\"\nprotocol = \"livestore\"\n",
};

/// How many requests of `outcome` the server counted.
async fn requests(server: &TestServer, outcome: &str) -> u64 {
    let series =
        format!("spike_livestore_requests_total{{plugin=\"livestore\",kind=\"{outcome}\"}} ");
    let text = server.metrics_text().await;
    (text.lines())
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livestore_clients_sync_rebase_and_keep_every_event_across_a_restart() {
    let mut server = TestServer::start(&[LIVESTORE]).await;
    let url = ws_url(&server.url, "/livestore");
    let mut ann = LiveStorePeer::start(&url, "todos", None).await;
    let mut bob = LiveStorePeer::start(&url, "todos", None).await;
    // Both commit at once: one push wins, the other is refused as stale
    // (ServerAheadError) and its client pulls, rebases and pushes again.
    // Rounds until a refusal happened, which the first nearly always has.
    let mut total = 0;
    let mut todos = Value::Null;
    for round in 0..5 {
        for i in 0..10 {
            ann.add(&format!("a{round}-{i}"), "ann").await;
            bob.add(&format!("b{round}-{i}"), "bob").await;
        }
        total += 20;
        todos = ann.todos_when(total).await;
        assert_eq!(bob.todos_when(total).await, todos);
        assert_eq!(todos.as_array().unwrap().len(), total);
        if requests(&server, "server_ahead").await > 0 {
            break;
        }
    }
    assert!(
        requests(&server, "server_ahead").await > 0,
        "no stale push in 5 rounds"
    );

    // A late joiner replays the store.
    let carl = LiveStorePeer::start(&url, "todos", None).await;
    let mut carl = carl;
    assert_eq!(carl.todos_when(total).await, todos);
    // Another store is another room.
    let mut other = LiveStorePeer::start(&url, "elsewhere", None).await;
    assert_eq!(other.todos_when(0).await, json!([]));
    for peer in [ann, bob, carl, other] {
        peer.quit().await;
    }

    // Every acknowledged event is kept.
    server.restart().await;
    let url = ws_url(&server.url, "/livestore");
    let mut dave = LiveStorePeer::start(&url, "todos", None).await;
    assert_eq!(dave.todos_when(total).await, todos);
    dave.add("d", "dave").await;
    assert_eq!(
        dave.todos_when(total + 1).await.as_array().unwrap().len(),
        total + 1
    );
    dave.quit().await;
}

fn exit_success(id: &str) -> Value {
    json!({"_tag": "Exit", "requestId": id, "exit": {"_tag": "Success", "value": {}}})
}

/// The error of a failed `Exit`.
fn failure(frame: &Value) -> &Value {
    assert_eq!(frame["exit"]["_tag"], "Failure", "{frame}");
    &frame["exit"]["cause"]["error"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_effect_rpc_protocol_at_the_frame_level() {
    let mut server = TestServer::start(&[LIVESTORE]).await;
    let url = ws_url(&server.url, "/livestore?storeId=f&transport=ws");
    let mut a = RoomClient::open(&url, None).await.unwrap();
    a.send(r#"{"_tag":"Ping"}"#).await;
    assert_eq!(a.next().await, json!({"_tag": "Pong"}));

    // An empty store: one empty page, then the end of a pull that is not live.
    a.send(&pull("0", "f", false, None)).await;
    let page = a.next().await;
    assert_eq!(page["_tag"], "Chunk");
    let response = &page["values"][0];
    assert_eq!(response["batch"], json!([]));
    assert_eq!(response["pageInfo"], json!({"_tag": "NoMore"}));
    let backend = response["backendId"].as_str().unwrap().to_string();
    assert_eq!(
        a.next().await,
        json!({"_tag": "Exit", "requestId": "0", "exit": {"_tag": "Success"}})
    );

    a.send(&push("1", "f", vec![event(1)], None)).await;
    assert_eq!(a.next().await, exit_success("1"));
    // The same parent again: stale.
    a.send(&push("2", "f", vec![event(1)], Some(&backend)))
        .await;
    assert_eq!(
        *failure(&a.next().await),
        json!({"_tag": "ServerAheadError", "minimumExpectedNum": 1, "providedNum": 0})
    );
    a.send(&push("3", "f", vec![event(2)], Some("another")))
        .await;
    assert_eq!(
        *failure(&a.next().await),
        json!({"_tag": "BackendIdMismatchError", "expected": backend, "received": "another"})
    );
    a.send(&push("4", "f", vec![event(2), event(4)], None))
        .await;
    assert_eq!(failure(&a.next().await)["_tag"], "UnknownError");
    a.send(&push("5", "g", vec![event(2)], None)).await;
    assert_eq!(failure(&a.next().await)["_tag"], "UnknownError");
    a.send("{").await;
    assert_eq!(a.next().await["_tag"], "Defect");
    for (id, range) in [("6", 2..=101), ("7", 102..=201), ("8", 202..=250)] {
        a.send(&push(id, "f", range.map(event).collect(), None))
            .await;
        assert_eq!(a.next().await, exit_success(id));
    }

    // A live pull from the start: pages of 100, then pushes as they come.
    let mut b = RoomClient::open(&url, None).await.unwrap();
    b.send(&pull("1", "f", true, Some((&backend, 0)))).await;
    let mut seen = Vec::new();
    for remaining in [150, 50, 0] {
        let page = b.next().await;
        assert_eq!(page["requestId"], "1");
        let response = &page["values"][0];
        let info = if remaining > 0 {
            json!({"_tag": "MoreKnown", "remaining": remaining})
        } else {
            json!({"_tag": "NoMore"})
        };
        assert_eq!(response["pageInfo"], info);
        for item in response["batch"].as_array().unwrap() {
            seen.push(item["eventEncoded"]["seqNum"].as_u64().unwrap());
            assert_eq!(
                item["metadata"]["value"]["_tag"],
                "SyncMessage.SyncMetadata"
            );
            assert!(
                item["metadata"]["value"]["createdAt"]
                    .as_str()
                    .unwrap()
                    .ends_with('Z')
            );
        }
    }
    assert_eq!(seen, (1..=250).collect::<Vec<_>>());
    a.send(&push("9", "f", vec![event(251)], None)).await;
    assert_eq!(a.next().await, exit_success("9"));
    let live = b.next().await;
    assert_eq!(live["requestId"], "1");
    assert_eq!(live["values"][0]["batch"][0]["eventEncoded"], event(251));
    // Interrupted: no more pushes on it.
    b.send(r#"{"_tag":"Interrupt","requestId":"1","interruptors":[]}"#)
        .await;
    assert_eq!(b.next().await["exit"]["cause"]["_tag"], "Interrupt");
    a.send(&push("10", "f", vec![event(252)], None)).await;
    assert_eq!(a.next().await, exit_success("10"));
    b.send(r#"{"_tag":"Ping"}"#).await;
    assert_eq!(b.next().await, json!({"_tag": "Pong"}));

    // Live pulls multiply what a push sends: a connection holds a few.
    let url_h = ws_url(&server.url, "/livestore?storeId=h&transport=ws");
    let mut greedy = RoomClient::open(&url_h, None).await.unwrap();
    for n in 0..8 {
        greedy.send(&pull(&n.to_string(), "h", true, None)).await;
        assert_eq!(greedy.next().await["_tag"], "Chunk");
    }
    greedy.send(&pull("8", "h", true, None)).await;
    let refused = greedy.next().await;
    assert_eq!(refused["requestId"], "8");
    assert_eq!(failure(&refused)["_tag"], "UnknownError");

    // After a restart: the same backend, every event.
    server.restart().await;
    let url = ws_url(&server.url, "/livestore?storeId=f&transport=ws");
    let mut c = RoomClient::open(&url, None).await.unwrap();
    c.send(&pull("0", "f", false, Some((&backend, 250)))).await;
    let page = c.next().await;
    assert_eq!(page["values"][0]["backendId"], backend);
    let batch = page["values"][0]["batch"].as_array().unwrap().clone();
    assert_eq!(batch.len(), 2);
    assert_eq!(batch[1]["eventEncoded"], event(252));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ws_message_protocol_of_0_3_shares_the_store() {
    let server = TestServer::start(&[LIVESTORE]).await;
    let url = ws_url(&server.url, "/livestore/websocket?storeId=g");
    let mut a = RoomClient::open(&url, None).await.unwrap();
    let mut b = RoomClient::open(&url, None).await.unwrap();
    a.send(r#"{"_tag":"WSMessage.Ping","requestId":"ping"}"#)
        .await;
    assert_eq!(
        a.next().await,
        json!({"_tag": "WSMessage.Pong", "requestId": "ping"})
    );
    a.send(r#"{"_tag":"WSMessage.PullReq","requestId":"p1"}"#)
        .await;
    assert_eq!(
        a.next().await,
        json!({"_tag": "WSMessage.PullRes", "batch": [], "requestId": {"context": "pull", "requestId": "p1"}, "remaining": 0})
    );
    let push = json!({"_tag": "WSMessage.PushReq", "requestId": "r1", "batch": [event(1)]});
    a.send(&push.to_string()).await;
    assert_eq!(
        a.next().await,
        json!({"_tag": "WSMessage.PushAck", "requestId": "r1"})
    );
    // Every 0.3 connection gets every push, the pusher too.
    for client in [&mut a, &mut b] {
        let res = client.next().await;
        assert_eq!(
            res["requestId"],
            json!({"context": "push", "requestId": "r1"})
        );
        assert_eq!(res["batch"][0]["eventEncoded"], event(1));
        assert!(res["batch"][0]["metadata"]["value"]["createdAt"].is_string());
    }
    b.send(&push.to_string()).await;
    assert_eq!(
        b.next().await,
        json!({"_tag": "WSMessage.Error", "requestId": "r1",
               "message": "Invalid parent event number. Received e0 but expected e1"})
    );
    b.send(r#"{"_tag":"WSMessage.AdminInfoReq","requestId":"x","adminSecret":"s"}"#)
        .await;
    assert_eq!(b.next().await["_tag"], "WSMessage.Error");

    // A 0.4 client of the same store sees the event.
    let url = ws_url(&server.url, "/livestore?storeId=g&transport=ws");
    let mut c = RoomClient::open(&url, None).await.unwrap();
    c.send(&pull("0", "g", false, None)).await;
    assert_eq!(
        c.next().await["values"][0]["batch"][0]["eventEncoded"],
        event(1)
    );
}

/// `payload` as `@livestore/sync-cf` puts it in its URL: JSON, URL-encoded
/// twice.
fn url_payload(payload: &Value) -> String {
    url_encode(&url_encode(&payload.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_checked_before_the_upgrade() {
    let server = TestServer::start(&[LIVESTORE]).await;
    for (path, status) in [
        ("/livestore?transport=ws", 400),
        ("/livestore?storeId=a%2Fb", 400),
        ("/livestore?storeId=s&transport=http", 400),
        ("/livestore?storeId=s&payload=%257B", 400),
        ("/livestore/other?storeId=s", 404),
    ] {
        let refused = RoomClient::open(&ws_url(&server.url, path), None).await;
        assert_eq!(refused_status(&refused.err().unwrap()), status, "{path}");
    }
    let (status, body) = send_json(client().get(server.at("/livestore"))).await;
    assert_eq!((status, error_code(&body)), (400, "bad_store_id"), "{body}");
    let (status, body) =
        send_json(client().get(server.at("/livestore?storeId=s&transport=ws"))).await;
    assert_eq!(
        (status, error_code(&body)),
        (426, "upgrade_required"),
        "{body}"
    );

    // A token in the payload is the caller's bearer token.
    const KEY: &str = "livestore-test-key";
    let private = Plugin {
        manifest: "[[rooms]]\nprefix = \"/livestore\"\nprotocol = \"livestore\"\nauth = \"required\"\n",
        ..LIVESTORE
    };
    let server = start_with_hs256_auth(KEY, &[private]).await;
    let at = |payload: Option<Value>| {
        let mut path = "/livestore?storeId=p&transport=ws".to_string();
        if let Some(p) = payload {
            path += &format!("&payload={}", url_payload(&p));
        }
        ws_url(&server.url, &path)
    };
    for payload in [
        None,
        Some(json!({"authToken": "a.b.c"})),
        Some(json!({"other": 1})),
    ] {
        let refused = RoomClient::open(&at(payload.clone()), None).await;
        assert_eq!(refused_status(&refused.err().unwrap()), 401, "{payload:?}");
    }
    let token = &hs256_tokens(KEY, &["user_1"])[0];
    let mut member = RoomClient::open(&at(Some(json!({"authToken": token}))), None)
        .await
        .unwrap();
    member.send(&pull("0", "p", true, None)).await;
    assert_eq!(member.next().await["_tag"], "Chunk");
    // The real client, with its syncPayload.
    let url = ws_url(&server.url, "/livestore");
    let mut peer = LiveStorePeer::start(&url, "p", Some(token)).await;
    peer.add("t1", "signed in").await;
    assert_eq!(peer.todos_when(1).await[0]["id"], "t1");
    peer.quit().await;
}
