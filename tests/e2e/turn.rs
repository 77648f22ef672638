//! `GET /api/my-turn`: credentials by the TURN REST API scheme, checked by a
//! real coturn (`turnserver --use-auth-secret` on loopback) through its own
//! client, `turnutils_uclient`, which allocates a relay with them.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use spike::caps::secrets::SecretSource;
use spike_e2e::tokens::{mint, now_s, tokens};
use spike_e2e::*;

const HS_KEY: &str = "turn-test-hs256-key";
const TURN_SECRET: &str = "turn-shared-secret-for-tests";

/// coturn on 127.0.0.1, stopped on drop.
struct Coturn {
    port: u16,
    child: Child,
}

impl Coturn {
    fn start() -> Self {
        // A port free for both UDP and TCP, and a relay range of its own.
        let (port, relay) = loop {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let port = udp.local_addr().unwrap().port();
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                break (port, 50_000 + (port % 150) * 100);
            }
        };
        let child = Command::new("turnserver")
            .args([
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                "--use-auth-secret",
                "--realm=spike.test",
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--fingerprint",
                "--allow-loopback-peers",
                "--log-file=stdout",
                "--simple-log",
            ])
            .arg(format!("--listening-port={port}"))
            .arg(format!("--static-auth-secret={TURN_SECRET}"))
            .arg(format!("--min-port={relay}"))
            .arg(format!("--max-port={}", relay + 99))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver runs: run scripts/setup.sh (./dev.sh test does) to install coturn");
        // Ready once it listens.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "turnserver did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { port, child }
    }

    /// Whether coturn grants an allocation to `username` / `credential`.
    fn allocates(&self, username: &str, credential: &str) -> bool {
        let mut client = Command::new("turnutils_uclient")
            .args(["-n", "1", "-m", "1", "-y", "-e", "127.0.0.1"])
            .args(["-u", username, "-w", credential])
            .args(["-p", &self.port.to_string(), "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnutils_uclient runs");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = client.try_wait().unwrap() {
                return status.success();
            }
            if std::time::Instant::now() > deadline {
                let _ = client.kill();
                panic!("turnutils_uclient did not finish in 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(turn_env: &str) -> TestServer {
    let auth = format!(
        r#"
[[routes]]
prefix = "/api/my-turn"
auth = "required"
[grants]
kv = ["auth"]
secrets = ["hs-key", "turn-secret"]
[env]
HS256_SECRET = "hs-key"
{turn_env}
"#
    );
    TestServer::start_with(
        &[Plugin {
            name: "auth",
            guest: "auth",
            manifest: &auth,
        }],
        |config| {
            config.secrets = SecretSource {
                file: None,
                env: vec![
                    ("SPIKE_SECRET_HS_KEY".into(), HS_KEY.into()),
                    ("SPIKE_SECRET_TURN_SECRET".into(), TURN_SECRET.into()),
                ],
            };
        },
    )
    .await
}

fn token(sub: &str) -> String {
    let claims = json!({"sub": sub, "exp": now_s() + 300});
    tokens(&mint(&[
        json!({"op": "sign", "alg": "HS256", "key": HS_KEY, "claims": claims}),
    ]))
    .remove(0)
}

async fn my_turn(server: &TestServer, token: &str) -> (u16, Value) {
    send_json(client().get(server.at("/api/my-turn")).bearer_auth(token)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_accepts_the_credentials_and_refuses_them_once_expired() {
    let coturn = Coturn::start();
    let urls = format!("turn:127.0.0.1:{}?transport=udp", coturn.port);
    let server = start(&format!(
        "TURN_URLS = \"{urls}\"\nTURN_SECRET = \"turn-secret\"\nTURN_TTL_S = \"600\""
    ))
    .await;
    let (status, creds) = my_turn(&server, &token("user_1")).await;
    assert_eq!(status, 200, "{creds}");
    assert_eq!(creds["urls"], json!([urls]));
    assert_eq!(creds["ttl"], 600);
    let username = creds["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "user_1");
    let expiry: u64 = expiry.parse().unwrap();
    assert!(expiry.abs_diff(now_s() + 600) <= 5, "{username}");
    let credential = creds["credential"].as_str().unwrap();
    assert!(coturn.allocates(username, credential));
    // A credential for another name, or a changed one, is refused.
    assert!(!coturn.allocates(&format!("{expiry}:user_2"), credential));
    assert!(!coturn.allocates(username, "AAAA"));
    // Without a token the hook answers first.
    let (status, _) = send_json(client().get(server.at("/api/my-turn"))).await;
    assert_eq!(status, 401);
    drop(server);

    // Credentials that live a second are refused once the second is over.
    let server = start(&format!(
        "TURN_URLS = \"{urls}\"\nTURN_SECRET = \"turn-secret\"\nTURN_TTL_S = \"1\""
    ))
    .await;
    let (status, creds) = my_turn(&server, &token("user_1")).await;
    assert_eq!(status, 200, "{creds}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (username, credential) = (
        creds["username"].as_str().unwrap(),
        creds["credential"].as_str().unwrap(),
    );
    assert!(!coturn.allocates(username, credential));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_turn_setup_the_answer_is_503() {
    // Each answer names what the operator sets, as every secret error does.
    for (env, names) in [
        ("", "TURN_URLS"),
        ("TURN_URLS = \"turn:127.0.0.1:3478\"", "TURN_SECRET"),
        (
            "TURN_URLS = \"turn:127.0.0.1:3478\"\nTURN_SECRET = \"not-granted\"",
            "the manifest does not grant the secret 'not-granted' (grants.secrets)",
        ),
    ] {
        let server = start(env).await;
        let (status, body) = my_turn(&server, &token("user_1")).await;
        assert_eq!(status, 503, "{env}: {body}");
        assert_eq!(error_code(&body), "turn_unavailable");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{env}: {message}");
    }
}
