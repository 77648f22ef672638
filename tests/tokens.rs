//! Keys and tokens for the auth tests, minted by PyJWT (another ecosystem's
//! JWT library) through `tests/tools/mint.py`, in the venv that
//! `scripts/setup.sh` makes; and a JWKS server the tests control.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The folder `scripts/setup.sh` keeps test tools in.
pub fn tools_dir() -> PathBuf {
    match std::env::var_os("SPIKE_TOOLS_DIR") {
        Some(dir) => dir.into(),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/spike-tools"),
    }
}

/// Runs `tests/tools/mint.py` on a batch of jobs.
pub fn mint(jobs: &[Value]) -> Vec<Value> {
    let python = tools_dir().join("venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh (./dev.sh test does)",
        python.display()
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/mint.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mint.py starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(jobs).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mint.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A key pair: the private PEM to sign with, the public JWK to publish.
#[derive(Clone, Debug)]
pub struct KeyPair {
    pub kid: String,
    pub alg: &'static str,
    pub pem: String,
    pub public_pem: String,
    pub jwk: Value,
}

/// New RSA (RS256) and EC P-256 (ES256) key pairs with these `kid`s.
pub fn key_pairs(rsa_kid: &str, ec_kid: &str) -> (KeyPair, KeyPair) {
    let out = mint(&[
        json!({"op": "rsa_key", "kid": rsa_kid}),
        json!({"op": "ec_key", "kid": ec_kid}),
    ]);
    let pair = |v: &Value, kid: &str, alg| KeyPair {
        kid: kid.into(),
        alg,
        pem: v["pem"].as_str().unwrap().into(),
        public_pem: v["public_pem"].as_str().unwrap().into(),
        jwk: v["jwk"].clone(),
    };
    (
        pair(&out[0], rsa_kid, "RS256"),
        pair(&out[1], ec_kid, "ES256"),
    )
}

/// A job that signs `claims` with `key` under its `kid`.
pub fn sign_job(key: &KeyPair, claims: &Value) -> Value {
    json!({"op": "sign", "alg": key.alg, "key": key.pem, "claims": claims,
           "headers": {"kid": key.kid}})
}

/// Signs each `(key, claims)` in one batch.
pub fn sign_all(items: &[(&KeyPair, Value)]) -> Vec<String> {
    let jobs: Vec<Value> = items.iter().map(|(k, c)| sign_job(k, c)).collect();
    tokens(&mint(&jobs))
}

/// The `token` of each result.
pub fn tokens(results: &[Value]) -> Vec<String> {
    results
        .iter()
        .map(|r| r["token"].as_str().unwrap().to_string())
        .collect()
}

/// Seconds since the Unix epoch.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The payload of a JWT as its issuer wrote it.
pub fn payload_text(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// What the JWKS server does with a request.
#[derive(Clone, Debug)]
pub enum JwksMode {
    /// Answers 200 with the keys and this `Cache-Control`.
    Serve { cache_control: String },
    /// Answers with this status.
    Status(u16),
    /// Closes the connection without a word.
    Close,
    /// Waits this long before answering.
    Slow(Duration),
    /// Answers 200 with text that is no JWKS.
    Garbage,
}

/// A JWKS endpoint on 127.0.0.1 whose keys, behaviour and hit count the
/// test controls.
#[derive(Clone)]
pub struct JwksServer {
    pub port: u16,
    keys: Arc<Mutex<Vec<Value>>>,
    mode: Arc<Mutex<JwksMode>>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    pub async fn start(keys: Vec<Value>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Self {
            port: listener.local_addr().unwrap().port(),
            keys: Arc::new(Mutex::new(keys)),
            mode: Arc::new(Mutex::new(JwksMode::Serve {
                cache_control: "public, max-age=600".into(),
            })),
            hits: Arc::new(AtomicUsize::new(0)),
        };
        let this = server.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(this.clone().answer(socket));
            }
        });
        server
    }

    /// The key set's URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/.well-known/jwks.json", self.port)
    }

    pub fn set_keys(&self, keys: Vec<Value>) {
        *self.keys.lock().unwrap() = keys;
    }

    pub fn set_mode(&self, mode: JwksMode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    async fn answer(self, mut socket: tokio::net::TcpStream) {
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        self.hits.fetch_add(1, Ordering::SeqCst);
        let mode = self.mode.lock().unwrap().clone();
        let keys = json!({"keys": *self.keys.lock().unwrap()}).to_string();
        let (status, cache_control, body) = match mode {
            JwksMode::Serve { cache_control } => (200, cache_control, keys),
            JwksMode::Status(code) => (code, String::new(), "{}".into()),
            JwksMode::Close => return,
            JwksMode::Slow(wait) => {
                tokio::time::sleep(wait).await;
                (200, String::new(), keys)
            }
            JwksMode::Garbage => (200, String::new(), "<html>not a key set".into()),
        };
        let mut reply = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
            body.len()
        );
        if !cache_control.is_empty() {
            reply.push_str(&format!("cache-control: {cache_control}\r\n"));
        }
        reply.push_str("\r\n");
        reply.push_str(&body);
        let _ = socket.write_all(reply.as_bytes()).await;
    }
}

/// The name of the secret the HS256 auth plugins of the tests read.
pub const HS256_SECRET_NAME: &str = "hs-key";

/// An auth plugin's manifest (without `component`) that takes HS256
/// tokens signed with the secret [`HS256_SECRET_NAME`]; serve the key with
/// [`hs256_secret`].
pub const HS256_AUTH: &str = r#"
[[routes]]
prefix = "/api/logged_in"
auth = "required"
[grants]
kv = ["auth"]
secrets = ["hs-key"]
[env]
HS256_SECRET = "hs-key"
"#;

/// The auth plugin verifying HS256 tokens (the key is the secret
/// `hs-key`: `hs256_secret`, or `SPIKE_SECRET_HS_KEY` for a process).
pub const AUTH_HS256: crate::Plugin = crate::Plugin {
    name: "auth",
    guest: "auth",
    manifest: HS256_AUTH,
};

/// The operator's secrets holding `key` as the HS256 key.
pub fn hs256_secret(key: &str) -> spike::caps::secrets::SecretSource {
    spike::caps::secrets::SecretSource {
        file: None,
        env: vec![("SPIKE_SECRET_HS_KEY".into(), key.into())],
    }
}

/// A server with the auth plugin verifying HS256 tokens signed with `key`,
/// beside `plugins`.
pub async fn start_with_hs256_auth(key: &str, plugins: &[crate::Plugin<'_>]) -> crate::TestServer {
    let all: Vec<crate::Plugin<'_>> = std::iter::once(AUTH_HS256)
        .chain(plugins.iter().copied())
        .collect();
    crate::TestServer::start_with(&all, |config| config.secrets = hs256_secret(key)).await
}

/// HS256 tokens signed with `key`, one per subject, valid for ten minutes.
pub fn hs256_tokens(key: &str, subjects: &[&str]) -> Vec<String> {
    let jobs: Vec<Value> = subjects
        .iter()
        .map(|sub| {
            json!({"op": "sign", "alg": "HS256", "key": key,
                   "claims": {"sub": sub, "exp": now_s() + 600}})
        })
        .collect();
    tokens(&mint(&jobs))
}
