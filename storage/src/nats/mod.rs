//! The cluster backend: JetStream on a NATS server (2.11 or later), shared
//! by every node that names the same server and prefix. The only code that
//! names NATS.
//!
//! ```text
//! P_kv          KV bucket   "<ns>.<key>"      -> kv_entry codec; expiring
//!                                                entries carry a per-message
//!                                                TTL so the server reclaims them
//! P_blobs       KV bucket   "<bucket>.<key>"  -> JSON ObjectInfo (the index)
//! P_body_refs   KV bucket   "<sha256>"        -> when a body was last referenced
//! P_bodies      Object Store "<sha256>"       -> blob bodies, content-addressed
//! P_plugins     KV bucket   "<plugin>"        -> JSON VersionHistory
//! P_components  Object Store "<sha256>"       -> component versions
//! P_rooms       stream, subject P.room.<room> -> one message per append
//! P_room_state  KV bucket   "<room>.<key>"    -> a room's small state
//! P_snapshots   Object Store "<room>"         -> a room's snapshot
//! P_nodes       KV bucket   "<node>"          -> JSON NodeStatus, lapsing
//! ```
//!
//! `P` is the prefix (`spike` unless the URL names another). Names in keys
//! and subjects are escaped one token each (`names`). Writes return when
//! JetStream has acknowledged them: stored by the server, or by a quorum of
//! its replicas. The server's own `sync_interval` decides when that is on
//! disk; `docs/operating.md` says how to set it.

mod blob;
mod cluster;
mod kv;
pub mod local;
mod messages;
mod names;
mod rooms;
mod stream;
mod versions;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv::Store, object_store::ObjectStore};

pub use cluster::NatsCluster;

use super::{Liveness, Result, StorageError, StorageSettings};

/// Where the cluster's data is: `nats://host:port[/prefix][?replicas=N]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    /// What the client connects to (`nats://host:port`, several separated
    /// by commas for a cluster of servers).
    pub servers: String,
    /// Names every bucket and stream, so that several spike clusters (or
    /// tests) can share one server.
    pub prefix: String,
    /// Copies JetStream keeps of each bucket and stream (1 for one server;
    /// 3 on a cluster of NATS servers).
    pub replicas: usize,
}

impl NatsSettings {
    /// Parses `nats://host:port[,host:port…][/prefix][?replicas=N]`.
    pub fn parse(url: &str) -> std::result::Result<Self, String> {
        let rest = url
            .strip_prefix("nats://")
            .ok_or_else(|| format!("{url:?} is not a nats:// URL"))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (hosts, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if hosts.is_empty() {
            return Err(format!("{url:?} names no server"));
        }
        let prefix = if prefix.is_empty() { "spike" } else { prefix };
        if !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!(
                "the prefix {prefix:?} may hold only letters, digits, '_' and '-'"
            ));
        }
        let mut replicas = 1;
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*name {
                "replicas" => {
                    replicas = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=5).contains(n))
                        .ok_or_else(|| format!("replicas={value} is not a number from 1 to 5"))?
                }
                other => return Err(format!("unknown setting {other:?} in {url:?}")),
            }
        }
        let servers = hosts
            .split(',')
            .map(|h| format!("nats://{h}"))
            .collect::<Vec<_>>()
            .join(",");
        Ok(Self {
            servers,
            prefix: prefix.to_string(),
            replicas,
        })
    }
}

/// The cluster backend; implements every storage trait.
#[derive(Clone)]
pub struct NatsBackend {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    prefix: String,
    kv: Store,
    blobs: Store,
    body_refs: Store,
    bodies: ObjectStore,
    plugins: Store,
    components: ObjectStore,
    rooms: jetstream::stream::Stream,
    room_state: Store,
    snapshots: ObjectStore,
    /// Uploads in progress, spooled here until their bucket and key are
    /// known (at commit).
    uploads_dir: PathBuf,
    /// What this node last saw of each room it appended to: the fencing
    /// condition of its next append (see `rooms`).
    room_heads: std::sync::Mutex<HashMap<String, rooms::Seen>>,
    /// Increments waiting for their key's writer (see `kv`).
    increments: kv::Increments,
    closed: tokio::sync::watch::Sender<bool>,
    sweeper: std::sync::Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(sweeper) = self.sweeper.lock().unwrap().take() {
            sweeper.abort();
        }
        self.closed.send_replace(true);
    }
}

/// A failure of the server or the connection, with what was being done.
fn failed(context: impl std::fmt::Display) -> impl FnOnce(&dyn std::fmt::Display) -> StorageError {
    move |e| StorageError::Backend(format!("{context}: {e}"))
}

/// Shorthand for `map_err(failed(...))` on any error that displays.
trait OrFailed<T> {
    fn or_failed(self, context: impl std::fmt::Display) -> Result<T>;
}

impl<T, E: std::fmt::Display> OrFailed<T> for std::result::Result<T, E> {
    fn or_failed(self, context: impl std::fmt::Display) -> Result<T> {
        self.map_err(|e| failed(context)(&e))
    }
}

/// How often a node looks for blob bodies no object uses.
const BODY_SWEEP: Duration = Duration::from_secs(600);

/// How long a request to the server (a JetStream write, a read) may take
/// before it fails: a server that is down or hung makes requests fail
/// after this, not after the client's default 10 s. A healthy one answers
/// in milliseconds, even with `sync_interval: always`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);

/// How long a delete marker of an expired or removed key stays (the
/// server's minimum is a second; a watcher must have time to see it).
const MARKER_TTL: Duration = Duration::from_secs(60);

impl NatsBackend {
    /// Connects, and creates the buckets and streams that are missing.
    pub async fn connect(
        settings: &NatsSettings,
        data_dir: &Path,
        _storage: &StorageSettings,
    ) -> Result<Self> {
        let client = async_nats::ConnectOptions::new()
            .name("spike")
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(REQUEST_TIMEOUT))
            .connect(settings.servers.as_str())
            .await
            .map_err(|e| {
                StorageError::Backend(format!(
                    "cannot reach the NATS server at {}: {e}",
                    settings.servers
                ))
            })?;
        let js = jetstream::new(client.clone());
        let p = &settings.prefix;
        let replicas = settings.replicas;
        let kv_bucket = |name: &str, ttl: bool| jetstream::kv::Config {
            bucket: format!("{p}_{name}"),
            history: 1,
            num_replicas: replicas,
            limit_markers: ttl.then_some(MARKER_TTL),
            ..Default::default()
        };
        let object_store = |name: &str| jetstream::object_store::Config {
            bucket: format!("{p}_{name}"),
            num_replicas: replicas,
            ..Default::default()
        };
        let kv = open_kv(&js, kv_bucket("kv", true)).await?;
        let blobs = open_kv(&js, kv_bucket("blobs", true)).await?;
        let body_refs = open_kv(&js, kv_bucket("body_refs", true)).await?;
        let plugins = open_kv(&js, kv_bucket("plugins", false)).await?;
        let room_state = open_kv(&js, kv_bucket("room_state", true)).await?;
        let bodies = open_objects(&js, object_store("bodies")).await?;
        let components = open_objects(&js, object_store("components")).await?;
        let snapshots = open_objects(&js, object_store("snapshots")).await?;
        let rooms = js
            .get_or_create_stream(jetstream::stream::Config {
                name: format!("{p}_rooms"),
                subjects: vec![format!("{p}.room.>")],
                num_replicas: replicas,
                allow_direct: true,
                ..Default::default()
            })
            .await
            .or_failed(format!("cannot open the stream {p}_rooms"))?;
        let uploads_dir = data_dir.join("nats-uploads");
        let _ = std::fs::remove_dir_all(&uploads_dir);
        std::fs::create_dir_all(&uploads_dir).map_err(StorageError::io(format!(
            "creating {}",
            uploads_dir.display()
        )))?;
        let backend = Self {
            inner: Arc::new(Inner {
                client,
                js,
                prefix: p.clone(),
                kv,
                blobs,
                body_refs,
                bodies,
                plugins,
                components,
                rooms,
                room_state,
                snapshots,
                uploads_dir,
                room_heads: Default::default(),
                increments: Default::default(),
                closed: Liveness::flag(),
                sweeper: Default::default(),
            }),
        };
        // Expired KV entries need no sweep here (the server drops them);
        // unused blob bodies are looked for now and then: each look reads
        // the whole blob index.
        let sweeper = blob::spawn_sweeper(Arc::downgrade(&backend.inner), BODY_SWEEP);
        *backend.inner.sweeper.lock().unwrap() = Some(sweeper);
        Ok(backend)
    }

    pub fn liveness(&self) -> Liveness {
        Liveness(self.inner.closed.subscribe())
    }

    /// The connection, for what the cluster does besides storage.
    pub fn client(&self) -> async_nats::Client {
        self.inner.client.clone()
    }

    /// The prefix of every name this backend uses.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }
}

async fn open_kv(js: &jetstream::Context, config: jetstream::kv::Config) -> Result<Store> {
    let name = config.bucket.clone();
    match js.get_key_value(&name).await {
        Ok(store) => Ok(store),
        Err(_) => js
            .create_key_value(config)
            .await
            .or_failed(format!("cannot create the KV bucket {name}")),
    }
}

async fn open_objects(
    js: &jetstream::Context,
    config: jetstream::object_store::Config,
) -> Result<ObjectStore> {
    let name = config.bucket.clone();
    match js.get_object_store(&name).await {
        Ok(store) => Ok(store),
        Err(_) => js
            .create_object_store(config)
            .await
            .or_failed(format!("cannot create the object store {name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Backends, Quota};

    /// The conformance suite against the test process's shared server,
    /// each check under a prefix of its own (the same for the same folder,
    /// so that reopening finds what was written).
    fn open(dir: &Path) -> Backends {
        let url = local::LocalNats::shared().unwrap_or_else(|e| panic!("{e}"));
        let prefix = &crate::util::sha256_hex(dir.to_string_lossy().as_bytes())[..12];
        let settings = NatsSettings::parse(&format!("{url}/t{prefix}")).unwrap();
        let storage = StorageSettings {
            kv_sweep_interval: Duration::from_secs(60),
        };
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current()
                .block_on(Backends::connect_nats(&settings, "test", dir, &storage))
        })
        .unwrap()
    }

    crate::conformance::suite!(open);

    /// Two nodes over the same prefix: once one fences a room, the other's
    /// appends are refused by the server, and nothing of them lands.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fenced_owner_cannot_append() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (open(dir.path()).rooms, open(dir.path()).rooms);
        let event = |t: &'static str| vec![bytes::Bytes::from_static(t.as_bytes())];
        old.append("r", 1, event("a"), Quota::NONE).await.unwrap();
        assert_eq!(new.head("r").await.unwrap().head, 1);
        new.fence("r").await.unwrap();
        let refused = old.append("r", 2, event("stale"), Quota::NONE).await;
        assert!(
            matches!(refused, Err(StorageError::RoomConflict { head: 1, .. })),
            "{refused:?}"
        );
        new.append("r", 2, event("b"), Quota::NONE).await.unwrap();
        // The stale owner, having looked again, sees the new owner's log.
        assert!(
            old.append("r", 2, event("late"), Quota::NONE)
                .await
                .is_err()
        );
        let texts: Vec<_> = old.read("r", 0, 10).await.unwrap();
        assert_eq!(
            texts,
            vec![(1, bytes::Bytes::from("a")), (2, bytes::Bytes::from("b"))]
        );
    }

    /// An expiring key is removed by the server itself (per-message TTL),
    /// not only hidden.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_server_reclaims_expired_keys() {
        let dir = tempfile::tempdir().unwrap();
        let url = local::LocalNats::shared().unwrap();
        let settings = NatsSettings::parse(&format!("{url}/ttl")).unwrap();
        let storage = StorageSettings {
            kv_sweep_interval: Duration::from_secs(60),
        };
        let backend = NatsBackend::connect(&settings, dir.path(), &storage)
            .await
            .unwrap();
        use crate::{KvBackend, KvEntry};
        let entry = KvEntry {
            value: b"v".to_vec(),
            metadata: None,
            expires_at_ms: Some(crate::util::now_ms() + 500),
        };
        backend.set("ns", "k", entry, Quota::NONE).await.unwrap();
        let key = names::scoped("ns", "k");
        assert!(
            stream::last(&backend.inner.kv, &key)
                .await
                .unwrap()
                .0
                .is_some()
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while stream::last(&backend.inner.kv, &key)
            .await
            .unwrap()
            .0
            .is_some()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the key is still stored"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[test]
    fn urls_name_servers_prefix_and_replicas() {
        let s = NatsSettings::parse("nats://127.0.0.1:4222").unwrap();
        assert_eq!(
            (s.servers.as_str(), s.prefix.as_str(), s.replicas),
            ("nats://127.0.0.1:4222", "spike", 1)
        );
        let s = NatsSettings::parse("nats://a:1,b:2/site_2?replicas=3").unwrap();
        assert_eq!(
            (s.servers.as_str(), s.prefix.as_str(), s.replicas),
            ("nats://a:1,nats://b:2", "site_2", 3)
        );
        for bad in [
            "http://a:1",
            "nats://",
            "nats://a:1/bad.prefix",
            "nats://a:1?replicas=0",
            "nats://a:1?replica=3",
        ] {
            assert!(NatsSettings::parse(bad).is_err(), "{bad}");
        }
    }
}
