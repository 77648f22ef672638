//! SQL databases end to end: the `notes` example plugin over real HTTP,
//! its SQLite file under the data folder, the grant, the limits' answers.

use spike_e2e::*;

const NOTES: Plugin = Plugin {
    name: "notes",
    guest: "notes",
    manifest: "[[routes]]\nprefix = \"/notes\"\nmethods = [\"GET\", \"POST\", \"PUT\", \"DELETE\"]\n\
               [grants]\nsql = [\"notes\"]\n[env]\nWRITE_ACCESS = \"anyone\"\n",
};

/// The same component granted another database: its `notes` is refused.
const UNGRANTED: Plugin = Plugin {
    name: "notes",
    guest: "notes",
    manifest: "[[routes]]\nprefix = \"/notes\"\n[grants]\nsql = [\"other\"]\n",
};

#[tokio::test]
async fn notes_are_written_read_and_kept_across_a_restart() {
    let mut server = TestServer::start(&[NOTES]).await;
    let c = client();
    let text = "milk \"2%\", 水 🦀 and\nnew lines";
    let (status, note) = send_json(
        c.post(server.at("/notes"))
            .json(&serde_json::json!({ "text": text })),
    )
    .await;
    assert_eq!(status, 201, "{note}");
    assert_eq!(note["text"], text);
    let id = note["id"].as_i64().unwrap();
    let (status, read) = send_json(c.get(server.at(&format!("/notes/{id}")))).await;
    assert_eq!((status, &read), (200, &note));

    let (status, replaced) = send_json(
        c.put(server.at(&format!("/notes/{id}")))
            .json(&serde_json::json!({ "text": "oat milk" })),
    )
    .await;
    assert_eq!((status, replaced["text"].as_str()), (200, Some("oat milk")));

    // SQLite's own refusal (the table's CHECK) is the guest's 400, with
    // SQLite's message.
    let (status, body) = send_json(
        c.post(server.at("/notes"))
            .json(&serde_json::json!({ "text": "" })),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid_input"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("CHECK constraint failed"),
        "{body}"
    );

    // A batch is all or nothing: the third import breaks the CHECK.
    let (status, body) = send_json(
        c.post(server.at("/notes/import"))
            .json(&serde_json::json!(["a", "b", "", "d"])),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("statement 3: CHECK constraint failed"),
        "{body}"
    );
    let (_, all) = send_json(c.get(server.at("/notes"))).await;
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    let (status, body) = send_json(
        c.post(server.at("/notes/import"))
            .json(&serde_json::json!(["a", "b"])),
    )
    .await;
    assert_eq!((status, body["imported"].as_i64()), (201, Some(2)));

    let metrics = server.metrics_text().await;
    let calls = "spike_sql_calls_total{plugin=\"notes\",database=\"notes\",kind=\"ok\"}";
    assert!(metrics.contains(calls), "{metrics}");
    assert!(
        metrics.contains(
            "spike_sql_calls_total{plugin=\"notes\",database=\"notes\",kind=\"statement\"} 2"
        ),
        "{metrics}"
    );
    // (Counted per process: the restart starts them again.)
    server.restart().await;
    let (_, all) = send_json(c.get(server.at("/notes"))).await;
    let texts: Vec<&str> = (all.as_array().unwrap().iter())
        .map(|n| n["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["b", "a", "oat milk"]);
    assert!(server.data_dir.join("sql/notes.sqlite").exists());

    let (status, _) = send(c.delete(server.at(&format!("/notes/{id}")))).await;
    assert_eq!(status, 204);
    let (status, body) = send_json(c.get(server.at(&format!("/notes/{id}")))).await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));
}

#[tokio::test]
async fn a_database_is_the_grants_and_writes_need_a_caller() {
    let server = TestServer::start(&[UNGRANTED]).await;
    let (status, body) = send_json(client().get(server.at("/notes"))).await;
    assert_eq!(
        (status, error_code(&body)),
        (403, "access_denied"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sql database 'notes' is not granted"),
        "{body}"
    );

    // The shipped manifest: anyone reads, writes need a signed-in caller.
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../plugins/notes.toml"
    ))
    .unwrap();
    let manifest: String = (shipped.lines())
        .filter(|line| !line.starts_with("component ="))
        .map(|line| format!("{line}\n"))
        .collect();
    let shipped = Plugin {
        name: "notes",
        guest: "notes",
        manifest: &manifest,
    };
    let server = TestServer::start(&[shipped]).await;
    let (status, _) = send(client().get(server.at("/notes"))).await;
    assert_eq!(status, 200);
    let (status, body) = send_json(
        client()
            .post(server.at("/notes"))
            .json(&serde_json::json!({ "text": "x" })),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (401, "missing_token"),
        "{body}"
    );
}

/// The operator's SQL API refuses what it cannot take with a JSON error:
/// no token, a body too big, a body that is not the JSON it takes, a name
/// no database can have; and counts per database on `/metrics`.
#[tokio::test]
async fn the_operator_api_refuses_bad_requests_with_json() {
    let server = TestServer::start(&[NOTES]).await;
    let c = client();
    let execute = server.at("/_spike/sql/notes/execute");
    let (status, body) = send_json(
        c.post(&execute)
            .json(&serde_json::json!({"sql": "SELECT 1"})),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let admin = |r: reqwest::RequestBuilder| r.bearer_auth(ADMIN_TOKEN);
    let big = "x".repeat(17 << 20);
    let (status, body) = send_json(admin(c.post(&execute)).body(big)).await;
    assert_eq!((status, error_code(&body)), (413, "too_large"), "{body}");
    let (status, body) = send_json(admin(c.post(&execute)).body("{\"sq\": 1}")).await;
    assert_eq!((status, error_code(&body)), (400, "bad_request"), "{body}");
    let (status, body) = send_json(
        admin(c.post(server.at("/_spike/sql/..%2Fx/execute")))
            .json(&serde_json::json!({"sql": "SELECT 1"})),
    )
    .await;
    assert_eq!((status, error_code(&body)), (400, "bad_request"), "{body}");
    let (status, body) = send_json(
        admin(c.post(server.at("/_spike/sql/notes/restore")))
            .json(&serde_json::json!({"to": "soon"})),
    )
    .await;
    assert_eq!((status, error_code(&body)), (400, "bad_request"), "{body}");

    // A write through the plugin shows in the database's own series.
    let (status, _) = send(
        c.post(server.at("/notes"))
            .json(&serde_json::json!({ "text": "m" })),
    )
    .await;
    assert_eq!(status, 201);
    let metrics = server.metrics_text().await;
    let size = (metrics.lines())
        .find(|l| l.starts_with("spike_sql_database_bytes{database=\"notes\"}"))
        .unwrap_or_else(|| panic!("{metrics}"));
    let bytes: f64 = size.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(bytes >= 4096.0, "{size}");
}
