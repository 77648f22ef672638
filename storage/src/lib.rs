//! spike's storage seam: what the host's capabilities and runtime need of
//! a backend, as traits, and the plain records that cross it. The host's
//! bottom layer: it depends on nothing of the host (it is a crate of its
//! own so that no import can run back up).
//!
//! - `KvBackend`: namespaced keys with TTL and metadata, atomic increment.
//! - `BlobBackend`: objects streamed in and out, with ranges and ETags.
//! - `VersionStore`: every component version a plugin ran, and its history.
//! - `RoomLog`: each room's ordered event log, its snapshot and its small
//!   key-value state.
//!
//! A backend does its own blocking work off the async workers, owns its
//! background tasks (expiry, cleanup) and stops them when dropped, and makes
//! every write durable before it returns. Validation of keys and sizes is
//! not its business: the capabilities check those (`caps/`), once, for
//! every backend. `redb/` is the embedded backend, the default.
//! `conformance` is the one test suite every backend must pass.

pub mod kv_entry;
mod messages;
pub mod nats;
pub mod redb;
mod spool;
pub mod util;

#[cfg(test)]
mod conformance;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncRead;

pub use kv_entry::{Expected, Swap};
pub use messages::{Call, Link, LinkSender};

/// Why a backend could not do what was asked. Only the variants a caller
/// acts on are told apart; everything else is a failure of the backend.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// `increment` on a value that is not a decimal integer.
    #[error("the value of '{key}' is not a decimal integer")]
    NotAnInteger { key: String },
    /// `increment` past the range of a 64-bit integer.
    #[error("incrementing '{key}' overflows a 64-bit integer")]
    Overflow { key: String },
    /// A component version that was never kept.
    #[error("no kept version {sha256}")]
    NoSuchVersion { sha256: String },
    /// An append to a room log that does not start right after its head:
    /// another owner wrote first (the fencing check of one owner per room).
    #[error("room '{room}' is at {head}, not {expected}")]
    RoomConflict {
        room: String,
        head: u64,
        expected: u64,
    },
    /// The write would take a namespace, bucket or room past its quota
    /// (`Quota`); nothing was written.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// Data that cannot be decoded.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A call reached no one: the node is gone, or does not serve the
    /// call's service (the call was not delivered).
    #[error("{0}")]
    NoResponder(String),
    /// The backend's engine failed (a database error, a lost connection).
    #[error("{0}")]
    Backend(String),
}

impl StorageError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// What a namespace, bucket or room holds: its bytes (keys and values,
/// objects, events) and its items (keys, objects, events).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub bytes: u64,
    pub items: u64,
}

/// The most a namespace, bucket or room may hold, as the writing plugin's
/// manifest says (`[storage]`); `None`: no limit. A write that would take
/// usage past a limit is refused (`StorageError::QuotaExceeded`) unless it
/// does not grow that usage (an overwrite with less, a delete), so that a
/// store already past a lowered quota can still shrink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    pub bytes: Option<u64>,
    pub items: Option<u64>,
}

impl Quota {
    /// No limit.
    pub const NONE: Quota = Quota {
        bytes: None,
        items: None,
    };

    /// `Err` with why if going from `before` to `after` passes a limit.
    pub fn check(&self, what: &str, before: Usage, after: Usage) -> Result<()> {
        if let Some(max) = self.bytes
            && after.bytes > max
            && after.bytes > before.bytes
        {
            return Err(StorageError::QuotaExceeded(format!(
                "{what} would hold {} bytes, over its quota of {max}",
                after.bytes
            )));
        }
        if let Some(max) = self.items
            && after.items > max
            && after.items > before.items
        {
            return Err(StorageError::QuotaExceeded(format!(
                "{what} would hold {} items, over its quota of {max}",
                after.items
            )));
        }
        Ok(())
    }
}

/// A KV entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    pub value: Vec<u8>,
    pub metadata: Option<String>,
    pub expires_at_ms: Option<u64>,
}

/// A KV key in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvKey {
    pub name: String,
    pub metadata: Option<String>,
    pub expires_at_ms: Option<u64>,
}

/// One page of a listing, in ascending key order; pass `cursor` to get the
/// next page (`None` on the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub cursor: Option<String>,
}

impl<T> Page<T> {
    /// The page of at most `limit` items from `items` (keys ascending from
    /// the cursor on) whose keys start with `prefix`: stops at the first
    /// key outside the prefix, and sets the cursor only if another item
    /// follows, so an exact page boundary leaves no dangling cursor.
    pub fn collect<E>(
        items: impl IntoIterator<Item = Result<(String, T), E>>,
        prefix: &str,
        limit: usize,
    ) -> Result<Self, E> {
        let mut page = Vec::new();
        let mut more = false;
        let mut last = None;
        for item in items {
            let (key, value) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            if page.len() == limit {
                more = true;
                break;
            }
            last = Some(key);
            page.push(value);
        }
        Ok(Self {
            items: page,
            cursor: if more { last } else { None },
        })
    }
}

/// What a backend keeps about an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// Hex SHA-256 of the bytes.
    pub etag: String,
    pub content_type: Option<String>,
    pub metadata: Vec<(String, String)>,
    pub uploaded_at_ms: u64,
}

/// An object's bytes, opened: they stay readable whatever writers do next.
pub struct OpenObject {
    pub info: ObjectInfo,
    pub body: Box<dyn ObjectBody>,
}

/// The bytes of an opened object.
#[async_trait::async_trait]
pub trait ObjectBody: Send {
    /// A reader of `length` bytes from `offset` (both within the object).
    async fn range(
        self: Box<Self>,
        offset: u64,
        length: u64,
    ) -> Result<Box<dyn AsyncRead + Send + Unpin>>;
}

/// An upload in progress. Dropped without `commit`, it leaves nothing.
#[async_trait::async_trait]
pub trait ObjectUpload: Send {
    async fn write(&mut self, bytes: &[u8]) -> Result<()>;

    /// Makes the bytes written the object `bucket/key`, replacing any
    /// object there, unless that passes the bucket's `quota`; durable when
    /// it returns.
    async fn commit(
        self: Box<Self>,
        bucket: &str,
        key: &str,
        content_type: Option<String>,
        metadata: Vec<(String, String)>,
        quota: Quota,
    ) -> Result<ObjectInfo>;
}

/// Key-value namespaces. Expired entries are invisible (and reclaimed by
/// the backend in its own time).
///
/// A backend that accounts usage (`usage` answers) refuses a write past
/// the namespace's `quota` in the same step as the write; one that does
/// not (NATS: JetStream's own limits bound its buckets) takes it.
#[async_trait::async_trait]
pub trait KvBackend: Send + Sync {
    async fn get(&self, ns: &str, key: &str) -> Result<Option<KvEntry>>;
    async fn set(&self, ns: &str, key: &str, entry: KvEntry, quota: Quota) -> Result<()>;
    /// Whether a live entry was removed.
    async fn delete(&self, ns: &str, key: &str) -> Result<bool>;
    /// Adds `delta` to the decimal integer under `key` (0 if absent or
    /// expired), atomically; keeps the metadata and the expiry of a live
    /// key.
    async fn increment(&self, ns: &str, key: &str, delta: i64, quota: Quota) -> Result<i64>;
    /// Stores `entry` under `key` only if the key's live value is
    /// `expected` (an expired key is absent), as one atomic step: of
    /// concurrent swaps expecting one value, exactly one is `Done`.
    /// Metadata and expiry are not compared.
    async fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Expected,
        entry: KvEntry,
        quota: Quota,
    ) -> Result<Swap>;
    /// What `ns` holds (its keys and entries, expired ones until they are
    /// reclaimed); `None` if the backend does not account it.
    async fn usage(&self, ns: &str) -> Result<Option<Usage>>;
    async fn list(
        &self,
        ns: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<KvKey>>;
}

/// Buckets of objects (quotas as for `KvBackend`, at an upload's commit).
#[async_trait::async_trait]
pub trait BlobBackend: Send + Sync {
    /// What `bucket` holds (its objects' sizes and count); `None` if the
    /// backend does not account it.
    async fn usage(&self, bucket: &str) -> Result<Option<Usage>>;
    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>>;
    async fn open(&self, bucket: &str, key: &str) -> Result<Option<OpenObject>>;
    async fn upload(&self) -> Result<Box<dyn ObjectUpload>>;
    /// Whether there was an object.
    async fn delete(&self, bucket: &str, key: &str) -> Result<bool>;
    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ObjectInfo>>;
}

/// Where a plugin version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionSource {
    /// The component file named by the manifest.
    File,
    /// `PUT /_spike/plugins/{name}`.
    Upload,
}

/// A recorded activation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub sha256: String,
    pub source: VersionSource,
    pub activated_at_ms: u64,
}

/// A plugin's versions, each once, in the order they were last installed
/// (oldest first), and which one is active: a rollback moves that mark
/// and forgets nothing, so the way forward stays open.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionHistory {
    pub versions: Vec<VersionRecord>,
    /// Hash of the component file when it was last read, to tell at start
    /// whether the file changed since an upload or rollback.
    pub file_sha256: Option<String>,
    /// The active version's hash; histories written before it was kept
    /// have none, and their last version is the active one.
    #[serde(default)]
    pub active: Option<String>,
}

impl VersionHistory {
    /// The active version: the marked one, else (a history from before
    /// the mark) the last.
    pub fn active(&self) -> Option<&VersionRecord> {
        let position = self.active_position()?;
        self.versions.get(position)
    }

    pub fn active_position(&self) -> Option<usize> {
        match &self.active {
            Some(sha) => self.versions.iter().rposition(|v| &v.sha256 == sha),
            None => self.versions.len().checked_sub(1),
        }
    }
}

/// Component versions, by SHA-256, and each plugin's history.
#[async_trait::async_trait]
pub trait VersionStore: Send + Sync {
    async fn history(&self, plugin: &str) -> Result<VersionHistory>;
    async fn save_history(&self, plugin: &str, history: &VersionHistory) -> Result<()>;
    /// Keeps `bytes` as version `sha256` (nothing to do if kept already).
    async fn keep(&self, sha256: &str, bytes: &[u8]) -> Result<()>;
    async fn load(&self, sha256: &str) -> Result<Vec<u8>>;
}

/// A room's state at one point of its log, as its owner encoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSnapshot {
    /// The last event the snapshot covers.
    pub seq: u64,
    pub data: Bytes,
}

/// Where a room's log stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomLogHead {
    /// The last event's sequence number (0: none yet). Numbers start at 1
    /// and never repeat, compaction included.
    pub head: u64,
    /// Events up to this one were dropped by compaction (0: none).
    pub compacted_through: u64,
    pub snapshot: Option<RoomSnapshot>,
}

/// Rooms' ordered event logs. A room is named by its owner's choice of
/// string (the runtime uses `<plugin><prefix>/<id>`). Appends are durable
/// when they return; a backend may commit appends of many rooms together.
#[async_trait::async_trait]
pub trait RoomLog: Send + Sync {
    async fn head(&self, room: &str) -> Result<RoomLogHead>;
    /// Appends `events` as numbers `first`, `first + 1`, ...; refused with
    /// `RoomConflict` unless `first` is the head plus one, `QuotaExceeded`
    /// if the room's events (those kept since its last compaction) would
    /// pass `quota` (a backend that accounts rooms).
    async fn append(&self, room: &str, first: u64, events: Vec<Bytes>, quota: Quota) -> Result<()>;
    /// Up to `limit` events after `after`, in order, with their numbers.
    async fn read(&self, room: &str, after: u64, limit: usize) -> Result<Vec<(u64, Bytes)>>;
    /// Keeps `snapshot` (replacing the one before) and drops the events up
    /// to `drop_through`, which must not pass the snapshot.
    async fn compact(&self, room: &str, snapshot: RoomSnapshot, drop_through: u64) -> Result<()>;
    /// A room's small state (room-handler storage).
    async fn state_get(&self, room: &str, key: &str) -> Result<Option<Bytes>>;
    /// Sets (`Some`) or removes (`None`) one key of a room's state.
    async fn state_set(&self, room: &str, key: &str, value: Option<Bytes>) -> Result<()>;
    /// Makes every append this or any other node prepared before the call
    /// fail with `RoomConflict`: a new owner's first act on a log that
    /// other nodes share. A log only one process writes needs none.
    async fn fence(&self, _room: &str) -> Result<()> {
        Ok(())
    }
}

/// What one node of a cluster tells the others about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    /// Each plugin's active version (SHA-256) on the node.
    pub plugins: std::collections::BTreeMap<String, String>,
    pub at_ms: u64,
}

/// What the nodes of a cluster share besides storage: who is there, and
/// word of plugin changes. Only a shared backend has one.
#[async_trait::async_trait]
pub trait Cluster: Send + Sync {
    /// This node's name, unique in the cluster.
    fn node(&self) -> &str;
    /// Publishes this node's status; it lapses unless published again
    /// within `NODE_STATUS_TTL`.
    async fn report(&self, status: &NodeStatus) -> Result<()>;
    /// The nodes that reported lately, by name.
    async fn nodes(&self) -> Result<Vec<NodeStatus>>;
    /// The names of plugins whose version history changes from now on,
    /// on any node (this one included), as they change.
    async fn plugin_changes(&self) -> Result<futures::stream::BoxStream<'static, Result<String>>>;
    /// A shared number (a quota's state) and the revision a write over it
    /// expects; `None` if absent or lapsed.
    async fn number(&self, key: &str) -> Result<(Option<u64>, u64)>;
    /// Writes `value` under `key`, lapsing after `ttl`, if its revision is
    /// still `revision`; whether it did.
    async fn set_number(&self, key: &str, value: u64, revision: u64, ttl: Duration)
    -> Result<bool>;
    /// Claims the lease of `object` (a room, say: whatever has one owner
    /// in the cluster) for this node, lapsing after `ttl` unless renewed,
    /// or says which node holds it. A lease this node holds already is
    /// written again (a fresh revision): the caller makes sure one owner
    /// at a time claims.
    async fn claim_lease(&self, object: &str, ttl: Duration) -> Result<LeaseClaim>;
    /// Renews a lease held at `revision`; its new revision, or `None` if
    /// the lease is no longer this node's (it lapsed, another node took it).
    async fn renew_lease(&self, object: &str, revision: u64, ttl: Duration) -> Result<Option<u64>>;
    /// Gives a lease back, if it is still held at `revision`.
    async fn release_lease(&self, object: &str, revision: u64) -> Result<()>;
    /// Shares `plugin`'s manifest (pushed through the admin API) with
    /// every node.
    async fn share_manifest(&self, plugin: &str, text: &str) -> Result<()>;
    /// Tells every node that `plugin` was removed.
    async fn unshare_manifest(&self, plugin: &str) -> Result<()>;
    /// Every shared manifest as `(plugin, Some(text))`, then each one
    /// shared from now on, as it is; `(plugin, None)` for one removed.
    async fn manifests(
        &self,
    ) -> Result<futures::stream::BoxStream<'static, Result<(String, Option<String>)>>>;
    /// Calls addressed to this node's `service` (a kind of object that
    /// forwards to its owners: "rooms", "sql"), from now on, as they come.
    async fn calls(&self, service: &str) -> Result<futures::stream::BoxStream<'static, Call>>;
    /// Sends `body` to `node`'s `service` and waits up to `timeout` for
    /// its answer.
    async fn call(
        &self,
        node: &str,
        service: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes>;
    /// Opens a new link: this end, whose id the other node passes to
    /// `answer_link`. It receives from the moment it is returned.
    async fn open_link(&self) -> Result<Link>;
    /// The other end of link `id`, receiving from the moment it is
    /// returned.
    async fn answer_link(&self, id: &str) -> Result<Link>;
}

/// Who owns an object (a room) across the nodes of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseClaim {
    /// This node does, at this revision of the lease.
    Ours(u64),
    /// Another node does.
    Theirs(String),
}

/// How long a node's status stays without being published again.
pub const NODE_STATUS_TTL: Duration = Duration::from_secs(15);

/// The backends of one host, and a way to tell when they have all closed.
#[derive(Clone)]
pub struct Backends {
    pub kv: Arc<dyn KvBackend>,
    pub blob: Arc<dyn BlobBackend>,
    pub versions: Arc<dyn VersionStore>,
    pub rooms: Arc<dyn RoomLog>,
    /// The other nodes, when the backend is shared (`None`: this node is
    /// alone with its data).
    pub cluster: Option<Arc<dyn Cluster>>,
    liveness: Liveness,
}

/// Settings a backend takes.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// How often expired KV entries are reclaimed.
    pub kv_sweep_interval: Duration,
}

impl Backends {
    /// The embedded backend in `data_dir`.
    pub fn open_redb(data_dir: &Path, settings: &StorageSettings) -> Result<Self> {
        let backend = redb::RedbBackend::open(data_dir, settings)?;
        Ok(Self {
            liveness: backend.liveness(),
            kv: backend.clone(),
            blob: backend.clone(),
            rooms: backend.clone(),
            versions: backend,
            cluster: None,
        })
    }

    /// The cluster backend on the NATS server `settings` names, as the
    /// node `node`; uploads are spooled under `data_dir`.
    pub async fn connect_nats(
        settings: &nats::NatsSettings,
        node: &str,
        data_dir: &Path,
        storage: &StorageSettings,
    ) -> Result<Self> {
        let backend = nats::NatsBackend::connect(settings, data_dir, storage).await?;
        let cluster = nats::NatsCluster::join(&backend, node).await?;
        Ok(Self {
            liveness: backend.liveness(),
            kv: Arc::new(backend.clone()),
            blob: Arc::new(backend.clone()),
            rooms: Arc::new(backend.clone()),
            versions: Arc::new(backend),
            cluster: Some(Arc::new(cluster)),
        })
    }

    /// Tells whether the backends are still open anywhere (the embedded
    /// database stays locked until then).
    pub fn liveness(&self) -> Liveness {
        self.liveness.clone()
    }
}

/// See `Backends::liveness`: raised by a backend once it has closed.
#[derive(Clone)]
pub struct Liveness(tokio::sync::watch::Receiver<bool>);

impl Liveness {
    /// A backend's flag, lowered.
    pub(crate) fn flag() -> tokio::sync::watch::Sender<bool> {
        tokio::sync::watch::Sender::new(false)
    }

    /// Waits until the backend has closed (its flag raised, or gone with
    /// it).
    pub async fn closed(mut self) {
        let _ = self.0.wait_for(|closed| *closed).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<Result<(String, String), ()>> {
        names
            .iter()
            .map(|n| Ok((n.to_string(), n.to_string())))
            .collect()
    }

    #[test]
    fn pages_stop_at_the_prefix_and_the_limit() {
        let page = Page::collect(keys(&["a1", "a2", "a3", "b1"]), "a", 2).unwrap();
        assert_eq!(page.items, ["a1", "a2"]);
        assert_eq!(page.cursor.as_deref(), Some("a2"));
        let page = Page::collect(keys(&["a3", "b1"]), "a", 2).unwrap();
        assert_eq!((page.items.len(), page.cursor), (1, None));
        // Exactly a page: no cursor to an empty next page.
        let page = Page::collect(keys(&["a1", "a2", "b"]), "a", 2).unwrap();
        assert_eq!(page.cursor, None);
    }
}
