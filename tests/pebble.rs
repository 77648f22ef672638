//! Let's Encrypt's test ACME server, Debian's `pebble`, on loopback for
//! the tests, with `pebble-challtestsrv` as its DNS (every name is
//! 127.0.0.1). Pebble validates TLS-ALPN-01 on `tls_port` and HTTP-01 on
//! `http_port`, where the server under test listens, and issues
//! certificates that live `validity` (short, to see renewals). Its API's
//! own certificate comes from a test CA, which the server is told to trust
//! (`--acme-ca-root`); what it issues chains to a root of its own
//! (`issuing_roots`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::free_port;
use crate::tls::{Conn, TestCa, connect, roots};
use crate::within_for;

pub struct Pebble {
    children: Vec<Child>,
    /// The ACME directory's URL.
    pub directory: String,
    /// The root that signed the directory's HTTPS certificate.
    pub api_root: PathBuf,
    api_root_pem: String,
    management: u16,
    _dir: tempfile::TempDir,
}

impl Pebble {
    pub async fn start(tls_port: u16, http_port: u16, validity: Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("pebble API test CA");
        let leaf = ca.issue(&["localhost", "127.0.0.1"]);
        let (cert, key) = TestCa::write(&leaf, dir.path());
        let api_root = dir.path().join("api-root.pem");
        std::fs::write(&api_root, &ca.root_pem).unwrap();
        let (listen, management, dns, challtest) =
            (free_port(), free_port(), free_port(), free_port());
        let config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": cert, "privateKey": key,
            "httpPort": http_port, "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity.as_secs(),
        }});
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = |name: &str| Stdio::from(std::fs::File::create(dir.path().join(name)).unwrap());
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{challtest}")])
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .expect("pebble-challtestsrv runs (scripts/setup.sh installs Debian's pebble)");
        let pebble = Command::new("pebble")
            .args(["-config", config_path.to_str().unwrap()])
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            // Validations at once, not after pebble's random sleep.
            .env("PEBBLE_VA_NOSLEEP", "1")
            // Every order validated (no authorization reused from before).
            // Pebble still refuses 5% of good nonces, as a CA may.
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("pebble runs (scripts/setup.sh installs Debian's pebble)");
        let pebble = Self {
            children: vec![dns_server, pebble],
            directory: format!("https://localhost:{listen}/dir"),
            api_root,
            api_root_pem: ca.root_pem,
            management,
            _dir: dir,
        };
        within_for(Duration::from_secs(10), async {
            while tokio::net::TcpStream::connect(("127.0.0.1", listen))
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        pebble
    }

    /// The root of what pebble issues (made anew at each start).
    pub async fn issuing_roots(&self) -> rustls::RootCertStore {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.management));
        let trust = roots(&self.api_root_pem);
        let stream = connect(addr, "localhost", &trust, &[b"http/1.1"])
            .await
            .unwrap();
        let mut conn = Conn::over(stream).await;
        let (status, _, pem) = conn
            .get(&format!("localhost:{}", self.management), "/roots/0")
            .await;
        assert_eq!(status, 200, "{pem}");
        roots(&pem)
    }

    /// What pebble logged, for a failing test.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("pebble.log")).unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("==== pebble log ====\n{}", self.log());
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
