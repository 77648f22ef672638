//! `/metrics`: the Prometheus text format, read by a Prometheus parser,
//! kept off the public surface, and moving with traffic.

use std::collections::HashMap;

use spike_e2e::*;

const LOOP: Plugin = Plugin {
    name: "loop",
    guest: "fixture_loop",
    manifest: "[[routes]]\nprefix = \"/loop\"\n[limits]\ncpu_ms = 100\n",
};

/// The samples of a scrape: `name{labels}` (labels sorted) -> value.
fn scrape(text: &str) -> HashMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("a Prometheus scrape");
    scrape
        .samples
        .into_iter()
        .filter_map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            Some((format!("{}{{{}}}", s.metric, labels.join(",")), value))
        })
        .collect()
}

fn value(samples: &HashMap<String, f64>, key: &str) -> f64 {
    *samples.get(key).unwrap_or_else(|| {
        panic!(
            "no sample {key}; have {:#?}",
            samples.keys().collect::<Vec<_>>()
        )
    })
}

async fn metrics(server: &TestServer) -> HashMap<String, f64> {
    let resp = within(
        client()
            .get(server.at("/_spike/metrics"))
            .bearer_auth(ADMIN_TOKEN)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    scrape(&within(resp.text()).await.unwrap())
}

#[tokio::test]
async fn counters_move_with_traffic() {
    let server = TestServer::start_with(&[HELLO, LOOP], |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let c = client();

    // Off the public surface: the token, or the metrics address.
    let (status, _) = send(c.get(server.at("/_spike/metrics"))).await;
    assert_eq!(status, 401);
    let (status, _) = send(c.get(server.at("/metrics"))).await;
    assert_eq!(
        status, 404,
        "no plugin serves /metrics, and the host does not either"
    );
    let scrape_addr = server.server().metrics_addr.unwrap();
    let (status, text) = send(c.get(format!("http://{scrape_addr}/metrics"))).await;
    assert_eq!(status, 200);
    assert!(text.contains("spike_plugin_swaps_total"), "{text}");

    for _ in 0..3 {
        assert_eq!(send(c.get(server.at("/hello"))).await.0, 200);
    }
    assert_eq!(send(c.post(server.at("/hello/counter"))).await.0, 200);
    let (status, _) = send(c.put(server.at("/hello/files/m.bin")).body(vec![1u8; 1000])).await;
    assert_eq!(status, 201);
    assert_eq!(send(c.get(server.at("/loop"))).await.0, 504);
    assert_eq!(send(c.get(server.at("/nowhere"))).await.0, 404);

    let m = metrics(&server).await;
    let hello_200 = "spike_http_requests_total{plugin=hello,route=/hello,status=200}";
    assert_eq!(value(&m, hello_200), 4.0, "3 greetings and the counter");
    assert_eq!(
        value(
            &m,
            "spike_http_requests_total{plugin=hello,route=/hello,status=201}"
        ),
        1.0
    );
    // /metrics on the public address and /nowhere.
    assert_eq!(
        value(&m, "spike_http_requests_total{plugin=-,route=-,status=404}"),
        2.0
    );
    assert_eq!(
        value(
            &m,
            "spike_http_requests_total{plugin=loop,route=/loop,status=504}"
        ),
        1.0
    );
    assert_eq!(
        value(&m, "spike_plugin_faults_total{kind=cpu_limit,plugin=loop}"),
        1.0
    );
    assert_eq!(
        value(&m, "spike_plugin_instantiations_total{plugin=hello}"),
        5.0
    );
    assert_eq!(
        value(&m, "spike_kv_operations_total{kind=increment,plugin=hello}"),
        1.0
    );
    assert_eq!(
        value(&m, "spike_blob_operations_total{kind=put,plugin=hello}"),
        1.0
    );
    assert_eq!(
        value(&m, "spike_blob_bytes_total{kind=written,plugin=hello}"),
        1000.0
    );
    assert_eq!(
        value(&m, "spike_plugin_swaps_total{kind=activated,plugin=hello}"),
        1.0
    );
    assert!(value(&m, "spike_http_connections_open{}") >= 1.0);

    // And again: exactly the new traffic.
    for _ in 0..5 {
        send(c.get(server.at("/hello"))).await;
    }
    let m = metrics(&server).await;
    assert_eq!(value(&m, hello_200), 9.0);
    assert_eq!(
        value(&m, "spike_plugin_instantiations_total{plugin=hello}"),
        10.0
    );
}
