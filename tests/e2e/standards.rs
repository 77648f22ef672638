//! Components written to the WASI standards (`wit/standards.wit`) run
//! unmodified: `tests/fixtures/standards`, built with wit-bindgen from the
//! proposals' WIT and the `wasi` crate alone, calls every function of
//! `wasi:keyvalue` at both versions, `wasi:config` under its three names,
//! `wasi:logging` and `wasi:blobstore`, through a real server on redb and
//! on NATS.

use futures::StreamExt;
use spike_e2e::*;

/// The standards fixture, granted the probe's namespace (to see one store
/// through both interfaces) and `other`, not `secret`.
const STANDARDS: Plugin = Plugin {
    name: "standards",
    guest: "fixture_standards",
    manifest: "[[routes]]\nprefix = \"/std\"\n\
               [grants]\nkv = [\"probe\", \"other\"]\n\
               blob = [\"probe-files\", \"other-files\"]\n\
               [config]\ngreeting = \"hello\"\n\"db.url\" = \"postgres://db/x\"\n",
};

/// spike's own KV interface on the same namespace (`spike:host/kv`).
const PROBE: Plugin = Plugin {
    name: "probe",
    guest: "fixture_probe",
    manifest: "[[routes]]\nprefix = \"/probe\"\n[grants]\nkv = [\"probe\"]\n\
               blob = [\"probe-files\"]\n",
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_function_of_each_version_on_redb() {
    let server = TestServer::start(&[STANDARDS, PROBE]).await;
    exercise(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_function_of_each_version_on_nats() {
    let nats = spike::storage::nats::local::LocalNats::start().unwrap_or_else(|e| panic!("{e}"));
    let settings = spike::storage::nats::NatsSettings::parse(nats.url()).unwrap();
    let server = TestServer::start_with(&[STANDARDS, PROBE], |config| {
        config.storage = Some(settings);
    })
    .await;
    exercise(&server).await;
}

/// A Python component (componentize-py, tests/python-standards): the
/// keyvalue, config and logging calls of Spin's and wasmCloud's versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_component_on_the_standards() {
    let python = Plugin {
        name: "python",
        guest: "fixture_python_standards",
        manifest: "[[routes]]\nprefix = \"/py\"\n[grants]\nkv = [\"probe\"]\n\
                   [config]\ngreeting = \"hello from config\"\n",
    };
    let server = TestServer::start(&[python]).await;
    let c = client();
    let (code, seen) = send(c.get(server.at("/py/run"))).await;
    assert_eq!(code, 200, "{seen}");
    let seen: serde_json::Value = serde_json::from_str(&seen).unwrap();
    let expected = serde_json::json!({
        "get": "one", "exists": true, "gone": true,
        "increments": [5, -2],
        "many": [["py-b1", "x"], ["py-b2", "y"], null], "deleted_many": true,
        "keys": ["py-n"],
        "stale": "CasError_CasFailed:changed", "after_swap": "swapped",
        "denied": "Error_AccessDenied",
        "greeting": "hello from config", "missing": null,
        "config": [["greeting", "hello from config"]],
    });
    assert_eq!(seen, expected);

    // 32 callers at once, each appending its number by compare-and-swap.
    let callers = (0..32).map(|n| {
        let (c, url) = (c.clone(), server.at(&format!("/py/append?n={n}")));
        async move { send(c.post(url)).await }
    });
    for (code, text) in within(futures::future::join_all(callers)).await {
        assert_eq!(code, 200, "{text}");
    }
    let logs = c
        .get(server.at("/_spike/plugins/python/logs"))
        .bearer_auth(ADMIN_TOKEN);
    let (_, logs) = send(logs).await;
    assert!(logs.contains("WARN py: from python"), "{logs}");
    let (code, value) = send(c.get(server.at("/py/appended"))).await;
    assert_eq!(code, 200, "{value}");
    let mut numbers: Vec<u32> = value
        .split('.')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    numbers.sort();
    assert_eq!(numbers, (0..32).collect::<Vec<u32>>(), "{value}");
}

#[tokio::test]
async fn a_version_spike_does_not_link_is_refused_at_load_by_name() {
    let unlinked = Plugin {
        name: "unlinked",
        guest: "fixture_unlinked_standard",
        manifest: "[[routes]]\nprefix = \"/unlinked\"\n",
    };
    let server = TestServer::start(&[unlinked, PROBE]).await;
    let status = server.plugin_status("unlinked").await;
    let error = status["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("wasi:keyvalue/store@0.2.0-draft3")
            && error.contains("0.2.0-draft, 0.2.0-draft2"),
        "{status}"
    );
    // It serves nothing; the other plugin is unaffected.
    let (code, _) = send(client().get(server.at("/unlinked"))).await;
    assert_eq!(code, 503);
    let (code, _) = send(client().get(server.at("/probe/kv/x"))).await;
    assert_eq!(code, 404);
}

async fn exercise(server: &TestServer) {
    for version in ["draft", "draft2"] {
        key_functions(server, version).await;
        batches(server, version).await;
    }
    listing(server).await;
    compare_and_swap(server).await;
    config(server).await;
    logging(server).await;
    blob_objects(server).await;
    blob_copies_listings_deletes(server).await;
    blob_containers(server).await;
}

async fn key_functions(server: &TestServer, v: &str) {
    let c = client();
    let at = |key: &str| server.at(&format!("/std/kv/{v}/probe/{v}-{key}"));
    assert_eq!(send(c.get(at("a"))).await, (404, "no such key".into()));
    assert_eq!(send(c.get(at("a") + "?exists")).await.1, "false");
    assert_eq!(send(c.put(at("a")).body("one")).await.0, 204);
    assert_eq!(send(c.get(at("a"))).await, (200, "one".into()));
    assert_eq!(send(c.get(at("a") + "?exists")).await.1, "true");
    // The same store through spike:host/kv, both ways.
    let probe = server.at(&format!("/probe/kv/{v}-a"));
    assert_eq!(send(c.get(&probe)).await, (200, "one".into()));
    assert_eq!(send(c.put(&probe).body("two")).await.0, 204);
    assert_eq!(send(c.get(at("a"))).await.1, "two");
    assert_eq!(send(c.delete(at("a"))).await.0, 204);
    assert_eq!(send(c.get(at("a"))).await.0, 404);
    // Deleting what is not there is not an error.
    assert_eq!(send(c.delete(at("a"))).await.0, 204);

    // Increments are decimal text, as spike:host/kv's.
    assert_eq!(
        send(c.post(at("n") + "?increment=5")).await,
        (200, "5".into())
    );
    assert_eq!(
        send(c.post(at("n") + "?increment=37")).await,
        (200, "42".into())
    );
    assert_eq!(send(c.get(at("n"))).await.1, "42");
    let (code, text) = send(c.put(at("s")).body("text")).await;
    assert_eq!(code, 204, "{text}");
    let (code, text) = send(c.post(at("s") + "?increment=1")).await;
    assert!(
        code == 500 && text.contains("not a decimal integer"),
        "{code} {text}"
    );
    if v == "draft2" {
        assert_eq!(send(c.post(at("n") + "?increment=-50")).await.1, "-8");
    }

    // A bucket the manifest does not grant.
    let denied = server.at(&format!("/std/kv/{v}/secret/k"));
    assert_eq!(send(c.get(denied)).await, (403, "access-denied".into()));
    // A key spike refuses (empty is not a key) is an `other` error.
    let (code, text) = send(c.put(server.at(&format!("/std/kv/{v}/probe/")))).await;
    assert!(
        code == 500 && text.contains("must not be empty"),
        "{code} {text}"
    );
}

async fn batches(server: &TestServer, v: &str) {
    let c = client();
    let bucket = server.at(&format!("/std/kv/{v}/probe"));
    let k = |key: &str| format!("{v}-b{key}");
    // A key named twice keeps its last value.
    let pairs = serde_json::json!([[k("1"), "x"], [k("2"), "y"], [k("1"), "z"]]);
    let set = c.post(format!("{bucket}?set-many")).body(pairs.to_string());
    assert_eq!(send(set).await.0, 204);
    let keys = serde_json::json!([k("1"), k("2"), k("3")]).to_string();
    let (code, found) = send(c.post(format!("{bucket}?get-many")).body(keys.clone())).await;
    assert_eq!(code, 200, "{found}");
    let expected = serde_json::json!([[k("1"), "z"], [k("2"), "y"], null]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&found).unwrap(),
        expected
    );
    let delete = c.post(format!("{bucket}?delete-many")).body(keys.clone());
    assert_eq!(send(delete).await.0, 204);
    let (_, found) = send(c.post(format!("{bucket}?get-many")).body(keys)).await;
    assert_eq!(found, "[null,null,null]");
    // More than a batch may name.
    let many: Vec<String> = (0..1001).map(|i| k(&i.to_string())).collect();
    let body = serde_json::json!(many).to_string();
    let (code, text) = send(c.post(format!("{bucket}?get-many")).body(body)).await;
    assert!(
        code == 500 && text.contains("over the limit"),
        "{code} {text}"
    );
}

/// 1,100 keys, listed a page at a time by each version's cursors.
async fn listing(server: &TestServer) {
    let c = client();
    let mut written: Vec<String> = (0..1100).map(|i| format!("key-{i:05}")).collect();
    for chunk in written.chunks(550) {
        let pairs: Vec<_> = chunk.iter().map(|k| serde_json::json!([k, "v"])).collect();
        let set = c.post(server.at("/std/kv/draft2/other?set-many"));
        let (code, text) = send(set.body(serde_json::json!(pairs).to_string())).await;
        assert_eq!(code, 204, "{text}");
    }
    written.sort();
    for v in ["draft", "draft2"] {
        let (mut listed, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
        loop {
            let query = cursor.map(|c| format!("?cursor={c}")).unwrap_or_default();
            let (code, page) = send(c.get(server.at(&format!("/std/kv/{v}/other{query}")))).await;
            assert_eq!(code, 200, "{page}");
            let page: serde_json::Value = serde_json::from_str(&page).unwrap();
            pages += 1;
            for key in page["keys"].as_array().unwrap() {
                listed.push(key.as_str().unwrap().to_string());
            }
            match page["cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => break,
            }
            assert!(pages < 10, "the cursors never end ({v})");
        }
        assert_eq!(pages, 2, "{v}: pages of 1000");
        assert_eq!(listed, written, "{v}: every key once, in order");
    }
}

async fn compare_and_swap(server: &TestServer) {
    let c = client();
    // A swap whose value changed after its handle read it fails, and the
    // handle it hands back holds the value found, and swaps.
    let at = server.at("/std/kv/draft2/probe/cas");
    assert_eq!(send(c.put(&at).body("first")).await.0, 204);
    assert_eq!(
        send(c.post(format!("{at}?stale"))).await,
        (200, "changed".into())
    );
    assert_eq!(send(c.get(&at)).await.1, "swapped");

    // 32 callers append their number at once: each lands exactly once.
    let list = server.at("/std/kv/draft2/probe/appended");
    let callers = (0..32).map(|n| {
        let (c, url) = (c.clone(), format!("{list}?append=.{n}"));
        async move { send(c.post(url)).await }
    });
    let answers = within(futures::future::join_all(callers)).await;
    let mut tries = 0;
    for (code, text) in &answers {
        assert_eq!(*code, 200, "{text}");
        tries += text.parse::<u32>().unwrap();
    }
    let (_, value) = send(c.get(&list)).await;
    let mut numbers: Vec<u32> = value
        .split('.')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    numbers.sort();
    assert_eq!(
        numbers,
        (0..32).collect::<Vec<_>>(),
        "{value} after {tries} swaps"
    );
    assert!(tries >= 32);
}

async fn config(server: &TestServer) {
    let c = client();
    for version in ["draft", "dated", "rc1"] {
        let at = |path: &str| server.at(&format!("/std/config/{version}{path}"));
        assert_eq!(send(c.get(at("/greeting"))).await, (200, "hello".into()));
        assert_eq!(send(c.get(at("/missing"))).await.0, 404);
        let (code, all) = send(c.get(at(""))).await;
        assert_eq!(code, 200);
        let expected = serde_json::json!([["db.url", "postgres://db/x"], ["greeting", "hello"]]);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&all).unwrap(),
            expected
        );
    }
}

async fn logging(server: &TestServer) {
    let c = client();
    for (level, context) in [("warn", "billing"), ("critical", ""), ("debug", "x")] {
        let url = server.at(&format!("/std/log?level={level}&context={context}"));
        assert_eq!(
            send(c.post(url).body(format!("{level} happened"))).await.0,
            204
        );
    }
    let logs = c
        .get(server.at("/_spike/plugins/standards/logs"))
        .bearer_auth(ADMIN_TOKEN);
    let (code, text) = send(logs).await;
    assert_eq!(code, 200, "{text}");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &serde_json::Value| l["stream"] == "wasi:logging")
        .collect();
    let texts: Vec<&str> = lines.iter().map(|l| l["line"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        [
            "WARN billing: warn happened",
            "ERROR CRITICAL critical happened",
            "DEBUG x: debug happened"
        ]
    );
}

/// Objects written and read, whole, in ranges, streamed, by both interfaces.
async fn blob_objects(server: &TestServer) {
    let c = client();
    let at = |path: &str| server.at(&format!("/std/blob/{path}"));
    assert_eq!(send(c.get(at("probe-files?exists"))).await.1, "true");
    assert_eq!(send(c.get(at("secret?exists"))).await.1, "false");
    assert_eq!(
        send(c.post(at("probe-files?create"))).await,
        (200, "probe-files".into())
    );
    let (code, text) = send(c.post(at("secret?create"))).await;
    assert!(code == 500 && text.contains("not granted"), "{code} {text}");

    assert_eq!(
        send(c.put(at("probe-files/a.txt")).body("hello world"))
            .await
            .0,
        204
    );
    assert_eq!(
        send(c.get(at("probe-files/a.txt"))).await,
        (200, "hello world".into())
    );
    // Inclusive ranges; an end past the object ends at it.
    let range = at("probe-files/a.txt?start=6&end=10");
    assert_eq!(send(c.get(range)).await.1, "world");
    assert_eq!(
        send(c.get(at("probe-files/a.txt?start=0&end=0"))).await.1,
        "h"
    );
    assert_eq!(
        send(c.get(at("probe-files/a.txt?start=6&stream"))).await.1,
        "world"
    );
    let (code, text) = send(c.get(at("probe-files/a.txt?start=11&end=20"))).await;
    assert!(code == 500 && text.contains("outside"), "{code} {text}");
    let (code, info) = send(c.get(at("probe-files/a.txt?info"))).await;
    assert_eq!(code, 200, "{info}");
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(
        (info["size"].as_u64(), info["container"].as_str()),
        (Some(11), Some("probe-files"))
    );
    assert!(
        info["created_at"].as_u64().unwrap().abs_diff(now_s) < 60,
        "{info}"
    );
    // The same bucket through spike:host/blob.
    assert_eq!(
        send(c.get(server.at("/probe/blob/a.txt"))).await,
        (200, "hello world".into())
    );

    // 3 MiB in and out, streamed and whole.
    let big: String = (0..3 << 20)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    assert_eq!(
        send(c.put(at("probe-files/big")).body(big.clone())).await.0,
        204
    );
    let (code, streamed) = send(c.get(at("probe-files/big?stream"))).await;
    assert!(
        code == 200 && streamed == big,
        "{code}, {} bytes",
        streamed.len()
    );
    assert!(send(c.get(at("probe-files/big"))).await.1 == big);
}

/// Objects copied and moved across containers, listed, deleted.
async fn blob_copies_listings_deletes(server: &TestServer) {
    let c = client();
    let at = |path: &str| server.at(&format!("/std/blob/{path}"));
    // Copied and moved across containers, content and all.
    assert_eq!(
        send(c.post(at("probe-files/a.txt?copy-to=other-files/b.txt")))
            .await
            .0,
        204
    );
    assert_eq!(send(c.get(at("other-files/b.txt"))).await.1, "hello world");
    assert_eq!(
        send(c.post(at("other-files/b.txt?move-to=probe-files/c.txt")))
            .await
            .0,
        204
    );
    assert_eq!(send(c.get(at("other-files/b.txt?exists"))).await.1, "false");
    assert_eq!(send(c.get(at("probe-files/c.txt"))).await.1, "hello world");
    let (code, text) = send(c.post(at("probe-files/a.txt?copy-to=secret/x"))).await;
    assert!(code == 500 && text.contains("not granted"), "{code} {text}");

    // Names a few at a time, after a skip.
    let (code, listed) = send(c.get(at("probe-files?skip=1&batch=1"))).await;
    assert_eq!(code, 200, "{listed}");
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["skipped"], 1);
    assert_eq!(listed["names"], serde_json::json!(["big", "c.txt"]));
    assert_eq!(
        (listed["name"].as_str(), listed["info_name"].as_str()),
        (Some("probe-files"), Some("probe-files"))
    );

    // An outgoing value dropped unfinished stores nothing.
    let unfinished = c.put(at("probe-files/half?unfinished")).body("x");
    assert_eq!(send(unfinished).await.0, 204);
    assert_eq!(send(c.get(at("probe-files/half?exists"))).await.1, "false");
    let (code, text) = send(c.get(at("probe-files/half"))).await;
    assert!(code == 500 && text.contains("no object"), "{code} {text}");

    // Deleting what is gone is not an error; several at once.
    assert_eq!(send(c.delete(at("probe-files/a.txt"))).await.0, 204);
    assert_eq!(send(c.delete(at("probe-files/a.txt"))).await.0, 204);
    assert_eq!(send(c.get(at("probe-files/a.txt?exists"))).await.1, "false");
    let delete = c.post(at("probe-files?delete")).body(r#"["big","c.txt"]"#);
    assert_eq!(send(delete).await.0, 204);
    let (_, listed) = send(c.get(at("probe-files"))).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&listed).unwrap()["names"],
        serde_json::json!([])
    );
}

/// 1,010 objects: listed past one page, then cleared; a container deleted.
async fn blob_containers(server: &TestServer) {
    let c = client();
    let at = |path: &str| server.at(&format!("/std/blob/{path}"));
    let puts = futures::stream::iter(0..1010).map(|i| {
        let (c, url) = (c.clone(), at(&format!("other-files/o{i:04}")));
        async move { send(c.put(url).body("x")).await.0 }
    });
    let codes: Vec<u16> = within(puts.buffer_unordered(16).collect()).await;
    assert!(codes.iter().all(|c| *c == 204), "{codes:?}");
    let (_, listed) = send(c.get(at("other-files?batch=300"))).await;
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let names = listed["names"].as_array().unwrap();
    assert_eq!(names.len(), 1010);
    assert_eq!(
        (names[0].as_str(), names[1009].as_str()),
        (Some("o0000"), Some("o1009"))
    );
    assert_eq!(send(c.post(at("other-files?clear"))).await.0, 204);
    let (_, listed) = send(c.get(at("other-files"))).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&listed).unwrap()["names"],
        serde_json::json!([])
    );
    // Deleting a container empties it; it stays granted.
    assert_eq!(send(c.put(at("other-files/last")).body("x")).await.0, 204);
    assert_eq!(send(c.delete(at("other-files"))).await.0, 204);
    assert_eq!(send(c.get(at("other-files/last?exists"))).await.1, "false");
    assert_eq!(send(c.get(at("other-files?exists"))).await.1, "true");
    let (code, text) = send(c.delete(at("secret"))).await;
    assert!(code == 500 && text.contains("not granted"), "{code} {text}");
}
