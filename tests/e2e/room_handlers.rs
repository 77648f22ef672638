//! Room handler components: the shipped chat example (names, commands,
//! room storage, refusing anonymous members) and a fixture that traps,
//! spins and allocates, appends and whispers; a handler swapped under
//! live connections.

use serde_json::Value;
use spike_e2e::rooms::*;
use spike_e2e::tokens::{hs256_tokens, start_with_hs256_auth};
use spike_e2e::*;

const HS_KEY: &str = "rooms-test-hs256-key";

fn chat(require_user: bool) -> String {
    format!(
        "[[rooms]]\nprefix = \"/chat\"\nauth = \"optional\"\n[env]\nREQUIRE_USER = \"{require_user}\"\n"
    )
}

async fn start_chat(require_user: bool) -> TestServer {
    let manifest = chat(require_user);
    let chat = Plugin {
        name: "chat",
        guest: "chat",
        manifest: &manifest,
    };
    start_with_hs256_auth(HS_KEY, &[chat]).await
}

fn event_data(event: &Value) -> Value {
    serde_json::from_str(event["data"].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_handler_names_and_transforms_messages() {
    let server = start_chat(false).await;
    let url = ws_url(&server.url, "/chat/lobby");
    let mut ann = RoomClient::join(&url).await;
    let token = &hs256_tokens(HS_KEY, &["user_bob"])[0];
    let mut bob = RoomClient::try_join_as(&url, Some(token)).await.unwrap();

    ann.send("hello").await;
    let event = bob.next_event().await;
    assert_eq!(event["seq"], 1);
    let data = event_data(&event);
    assert_eq!(data["text"], "hello");
    assert!(
        data["name"].as_str().unwrap().starts_with("guest-"),
        "{data}"
    );
    assert_eq!(ann.next_event().await["seq"], 1, "her own, back");
    bob.send("hi ann").await;
    let event = ann.next_event().await;
    assert_eq!(event_data(&event)["name"], "user_bob");
    assert_eq!(event["user"], "user_bob");
    assert_eq!(bob.next_event().await, event);

    // Commands answer the sender alone and store nothing.
    ann.send("/nick ann").await;
    assert_eq!(ann.next_of("nick").await["name"], "ann");
    ann.send("/who").await;
    let who = ann.next_of("who").await;
    let mut names: Vec<&str> = who["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ann", "user_bob"]);
    ann.send("again").await;
    assert_eq!(ann.next_event().await["seq"], 3);
    let event = bob.next_event().await;
    assert_eq!(
        (event["seq"].as_u64(), event_data(&event)["name"].as_str()),
        (Some(3), Some("ann"))
    );
    bob.send("/count").await;
    assert_eq!(bob.next_of("count").await["messages"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_handler_can_refuse_anonymous_members() {
    let server = start_chat(true).await;
    let url = ws_url(&server.url, "/chat/members-only");
    let mut anonymous = RoomClient::open(&url, None).await.unwrap();
    let (code, reason) = anonymous.closed().await;
    assert_eq!((code, reason.as_str()), (4001, "sign in to chat"));
    let token = &hs256_tokens(HS_KEY, &["user_1"])[0];
    let member = RoomClient::try_join_as(&url, Some(token)).await.unwrap();
    assert_eq!(
        member.welcome["member_count"], 1,
        "the refused one never joined"
    );
    // On an optional route a token that does not verify makes an
    // anonymous member, whom the handler refuses.
    let mut forged = RoomClient::open(&url, Some("a.b.c")).await.unwrap();
    assert_eq!(forged.closed().await.0, 4001);
}

fn faults(version: u8) -> Plugin<'static> {
    Plugin {
        name: "faults",
        guest: if version == 1 {
            "fixture_room_faults_v1"
        } else {
            "fixture_room_faults_v2"
        },
        manifest: "[[rooms]]\nprefix = \"/f\"\n[limits]\ncpu_ms = 200\nmemory_mib = 16\n",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_fails_only_its_event() {
    let server = TestServer::start(&[faults(1)]).await;
    let url = ws_url(&server.url, "/f/room");
    let mut sender = RoomClient::join(&url).await;
    let mut other = RoomClient::join(&url).await;
    for bad in ["trap", "spin", "grow"] {
        sender.send(bad).await;
        let error = sender.next_of("error").await;
        assert_eq!(error["code"], "handler_failed", "{bad}: {error}");
    }
    sender.send("fine").await;
    let event = other.next_event().await;
    assert_eq!(
        (event["seq"].as_u64(), event["data"].as_str()),
        (Some(1), Some("v1:fine"))
    );
    let metrics = server.metrics_text().await;
    for kind in ["trap", "cpu_limit", "memory_limit"] {
        let series =
            format!(r#"spike_room_handler_calls_total{{plugin="faults",kind="{kind}"}} 1"#);
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_append_whisper_and_are_swapped_under_live_connections() {
    let server = TestServer::start(&[faults(1)]).await;
    let url = ws_url(&server.url, "/f/swap");
    let mut client = RoomClient::join(&url).await;
    client.send("append:extra").await;
    let first = client.next_event().await;
    let second = client.next_event().await;
    assert_eq!(
        (first["seq"].as_u64(), first["data"].as_str()),
        (Some(1), Some("extra"))
    );
    assert_eq!(second["data"], "v1:append:extra");
    client.send("whisper").await;
    assert_eq!(client.next_of("whisper").await["to"], client.id().as_str());

    let v2 = std::fs::read(guest("fixture_room_faults_v2")).unwrap();
    let (status, body) = send_json(
        client_http()
            .put(server.at("/_spike/plugins/faults"))
            .bearer_auth(ADMIN_TOKEN)
            .body(v2),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    client.send("after").await;
    let event = client.next_event().await;
    assert_eq!(
        (event["seq"].as_u64(), event["data"].as_str()),
        (Some(3), Some("v2:after"))
    );
}

fn client_http() -> reqwest::Client {
    client()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_hook_runs_before_the_upgrade() {
    let private = Plugin {
        name: "private",
        guest: "",
        manifest: "[[rooms]]\nprefix = \"/private\"\nauth = \"required\"\n",
    };
    let server = start_with_hs256_auth(HS_KEY, &[private]).await;
    let url = ws_url(&server.url, "/private/team");
    for token in [None, Some("a.b.c")] {
        let refused = RoomClient::try_join_as(&url, token).await;
        assert_eq!(refused_status(&refused.err().unwrap()), 401, "{token:?}");
    }
    let token = &hs256_tokens(HS_KEY, &["user_7"])[0];
    let mut member = RoomClient::try_join_as(&url, Some(token)).await.unwrap();
    member.send("hi").await;
    assert_eq!(member.next_event().await["user"], "user_7");
}
