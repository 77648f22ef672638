//! Certificates by ACME against a real ACME server on loopback (Debian's
//! pebble): TLS-ALPN-01 on the TLS port and HTTP-01 on `--listen-http`, a
//! certificate issued, served, kept across a restart and renewed before it
//! expires; on a two-node cluster one order serves both nodes.

use std::net::SocketAddr;
use std::time::Duration;

use spike::tls::TlsSettings;
use spike::tls::acme::{AcmeSettings, ChallengeKind};
use spike_e2e::pebble::Pebble;
use spike_e2e::process::{SpikeProcess, free_port};
use spike_e2e::tls::{Conn, connect, peer_leaf};
use spike_e2e::{ADMIN_TOKEN, HELLO, TestServer, client, send, within, within_for};

const NAME: &str = "spike.test";

fn acme(pebble: &Pebble, challenge: ChallengeKind) -> AcmeSettings {
    AcmeSettings {
        domains: vec![NAME.into()],
        email: Some("ops@spike.test".into()),
        directory: pebble.directory.clone(),
        ca_root: Some(pebble.api_root.clone()),
        challenge,
        check_every: Duration::from_millis(500),
        retry_after: Duration::from_secs(1),
    }
}

/// The certificate `addr` shows for NAME once it shows one pebble issued
/// (checked against pebble's root), within `limit`.
async fn issued(addr: SocketAddr, roots: &rustls::RootCertStore, limit: Duration) -> Vec<u8> {
    within_for(limit, async {
        loop {
            if let Ok(stream) = connect(addr, NAME, roots, &[b"h2"]).await {
                return peer_leaf(&stream);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
}

/// A request over HTTPS as NAME, trusting pebble's root.
async fn hello(addr: SocketAddr, roots: &rustls::RootCertStore) -> (u16, String) {
    let stream = within(connect(addr, NAME, roots, &[b"h2"])).await.unwrap();
    let mut conn = Conn::over(stream).await;
    let (status, _, body) = within(conn.get(&format!("{NAME}:{}", addr.port()), "/hello")).await;
    (status, body)
}

/// The metrics from an admin listener.
async fn admin_metrics(admin: SocketAddr) -> String {
    let get = client().get(format!("http://{admin}/_spike/metrics"));
    let (status, text) = send(get.bearer_auth(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{text}");
    text
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_01_issues_serves_keeps_and_renews_a_certificate() {
    let port = free_port();
    // Certificates of 30 s: renewed from 20 s.
    let pebble = Pebble::start(port, free_port(), Duration::from_secs(30)).await;
    let settings = acme(&pebble, ChallengeKind::TlsAlpn01);
    let admin = loopback(free_port());
    let mut server = TestServer::start_with(&[HELLO], |config| {
        config.listen = loopback(port);
        config.admin_listen = Some(admin);
        config.tls = Some(TlsSettings {
            acme: Some(settings),
            ..TlsSettings::default()
        });
    })
    .await;
    let roots = pebble.issuing_roots().await;
    let first = issued(loopback(port), &roots, Duration::from_secs(30)).await;
    let (status, body) = hello(loopback(port), &roots).await;
    assert_eq!((status, body.contains("Hello")), (200, true), "{body}");

    // A restart serves the stored certificate at once, without an order.
    server.restart().await;
    let again = issued(loopback(port), &roots, Duration::from_secs(5)).await;
    assert_eq!(again, first, "the stored certificate is served");
    let metrics = admin_metrics(admin).await;
    assert!(
        metrics.contains(&format!(
            "spike_tls_certificate_renewals_total{{name=\"{NAME}\"}} 0"
        )),
        "{metrics}"
    );

    // Two thirds into its life it is renewed, and the new one served.
    let renewed = within_for(Duration::from_secs(40), async {
        loop {
            let now = issued(loopback(port), &roots, Duration::from_secs(5)).await;
            if now != first {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    assert_ne!(renewed, first);
    let metrics = admin_metrics(admin).await;
    assert!(
        metrics.contains(&format!(
            "spike_tls_certificate_renewals_total{{name=\"{NAME}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "spike_tls_certificate_renewal_failures_total{{name=\"{NAME}\"}} 0"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("spike_tls_handshakes_total{outcome=\"acme\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_01_is_answered_on_the_plain_listener() {
    let (port, http_port) = (free_port(), free_port());
    let pebble = Pebble::start(free_port(), http_port, Duration::from_secs(3600)).await;
    let settings = acme(&pebble, ChallengeKind::Http01);
    let _server = TestServer::start_with(&[HELLO], |config| {
        config.listen = loopback(port);
        config.listen_http = Some(loopback(http_port));
        config.tls = Some(TlsSettings {
            acme: Some(settings),
            ..TlsSettings::default()
        });
    })
    .await;
    let roots = pebble.issuing_roots().await;
    issued(loopback(port), &roots, Duration::from_secs(30)).await;
    let (status, body) = hello(loopback(port), &roots).await;
    assert_eq!(status, 200, "{body}");
    // Everything but the challenge path is sent to HTTPS.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = no_redirects.get(format!("http://127.0.0.1:{http_port}/hello"));
    let response = within(get.send()).await.unwrap();
    assert_eq!(response.status(), 308);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_nats_serve_one_certificate_after_one_order() {
    let nats = spike::storage::nats::local::LocalNats::start().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    spike_e2e::write_plugins(&plugins, &[HELLO]);
    let mut nodes: Vec<SpikeProcess> = Vec::new();
    let mut pebble = None;
    for i in 1..=2 {
        let name = format!("node-{i}");
        let admin = loopback(free_port());
        let nats_url = nats.url().to_string();
        let mut args: Vec<String> = ["--storage", &nats_url, "--node", &name]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(["--admin-listen".into(), admin.to_string()]);
        let node_args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = dir.path().join(format!("{name}.log"));
        let data = dir.path().join(&name);
        let node = SpikeProcess::new(&name, &plugins, &data, log, &node_args);
        // Pebble validates on the first node's port; the second node's
        // certificate comes from the storage they share.
        if pebble.is_none() {
            let port = node.addr.port();
            pebble = Some(Pebble::start(port, free_port(), Duration::from_secs(3600)).await);
        }
        let pebble = pebble.as_ref().unwrap();
        let mut node = node.args(&[
            "--acme-domain",
            NAME,
            "--acme-directory",
            &pebble.directory,
            "--acme-ca-root",
            pebble.api_root.to_str().unwrap(),
            "--acme-check-secs",
            "1",
            "--acme-retry-secs",
            "1",
        ]);
        // Ready when its admin listener says so (HTTPS waits for the order).
        node.url = format!("http://{admin}");
        nodes.push(node);
    }
    for node in &mut nodes {
        node.spawn();
    }
    for node in &nodes {
        node.wait_ready().await;
    }
    let pebble = pebble.unwrap();
    let roots = pebble.issuing_roots().await;
    let one = issued(nodes[0].addr, &roots, Duration::from_secs(60)).await;
    let two = issued(nodes[1].addr, &roots, Duration::from_secs(30)).await;
    assert_eq!(one, two, "both nodes serve the same certificate");
    for node in &nodes {
        assert_eq!(hello(node.addr, &roots).await.0, 200);
    }
    // One order between them.
    let mut orders = 0.0;
    for node in &nodes {
        let (status, text) = send(
            client()
                .get(node.at("/_spike/metrics"))
                .bearer_auth(ADMIN_TOKEN),
        )
        .await;
        assert_eq!(status, 200);
        orders += text
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "spike_tls_certificate_renewals_total{{name=\"{NAME}\"}} "
                ))
            })
            .unwrap_or("0")
            .parse::<f64>()
            .unwrap();
    }
    assert_eq!(orders, 1.0, "one node ordered the certificate");
}
