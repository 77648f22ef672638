//! The `spike:host/kv` capability: durable key-value namespaces.
//!
//! `KvView` implements the generated `Host` traits for a guest: it checks
//! the grant when a namespace is opened (a `Namespace` handle exists only
//! for a granted name), checks keys and sizes, and hands the rest to the
//! `KvBackend`.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use wasmtime::component::{HasData, Linker, Resource};

use super::{CapError, Kind, Named, View, call_span, check_key, page_limit};
use crate::bindings::spike::host::kv::{self as wit, Entry, KeyInfo, KeyPage, SetOptions};
use crate::metrics::KindLabels;
use crate::storage::{Expected, KvBackend, KvEntry, KvKey, Page, Swap};
use crate::telemetry::{self, traced};
use crate::util::now_ms;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 25 * 1024 * 1024;
/// Largest metadata, in bytes.
pub const MAX_METADATA_BYTES: usize = 1024;

fn key(key: &str) -> Result<(), CapError> {
    check_key("key", key, MAX_KEY_BYTES)
}

/// The entry `set` stores, or why not.
fn entry(value: Vec<u8>, options: SetOptions) -> Result<KvEntry, CapError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(CapError::TooLarge(format!(
            "value is {} bytes, the limit is {MAX_VALUE_BYTES}",
            value.len()
        )));
    }
    if let Some(m) = &options.metadata
        && m.len() > MAX_METADATA_BYTES
    {
        return Err(CapError::TooLarge(format!(
            "metadata is {} bytes, the limit is {MAX_METADATA_BYTES}",
            m.len()
        )));
    }
    let expires_at_ms = match options.ttl_ms {
        None => None,
        Some(0) => return Err(CapError::InvalidInput("ttl-ms must be at least 1".into())),
        Some(ttl) => Some(now_ms().saturating_add(ttl)),
    };
    Ok(KvEntry {
        value,
        metadata: options.metadata,
        expires_at_ms,
    })
}

/// The host's KV: the backend every plugin's namespaces live in.
pub struct KvCtx {
    pub backend: Arc<dyn KvBackend>,
}

/// A `namespace` handle: the guest opened a granted namespace.
pub struct Namespace(Arc<str>);

impl Named for Namespace {
    const KIND: Kind = Kind::Kv;

    fn new(name: Arc<str>) -> Self {
        Self(name)
    }

    fn name(&self) -> &Arc<str> {
        &self.0
    }
}

/// The view of a store's data that implements the KV `Host` traits.
pub type KvView<'a> = View<'a, KvCtx>;

impl wit::Host for KvView<'_> {}

/// The operations, on a namespace already opened (its grant checked):
/// `spike:host/kv` and `wasi:keyvalue` (`caps::wasi_keyvalue`) both call
/// these, so a call through either is checked, counted and traced alike.
/// Apart from the view (whose resource table is not `Sync`), so that a
/// host call's future holds only these shared borrows across its awaits,
/// and a batch may run several at once.
#[derive(Clone, Copy)]
pub(crate) struct KvOps<'a> {
    ctx: &'a KvCtx,
    grants: &'a super::Grants,
    counts: super::Counts<'a>,
}

impl<'a> KvView<'a> {
    pub(crate) fn ops(&self) -> KvOps<'a> {
        KvOps {
            ctx: self.ctx,
            grants: self.grants,
            counts: self.counts,
        }
    }
}

impl KvOps<'_> {
    pub(crate) async fn get_entry(&self, ns: &str, k: &str) -> Result<Option<KvEntry>, CapError> {
        let span = call_span("kv", "get", ns);
        traced(span.clone(), async {
            key(k)?;
            self.counts.kv("get");
            let entry = self.ctx.backend.get(ns, k).await?;
            let bytes = entry.as_ref().map_or(0, |e| e.value.len());
            self.counts.kv_bytes("read", bytes);
            telemetry::record(&span, "spike.bytes", bytes as u64);
            Ok(entry)
        })
        .await
    }

    pub(crate) async fn put(
        &self,
        ns: &str,
        k: &str,
        value: Vec<u8>,
        options: SetOptions,
    ) -> Result<(), CapError> {
        let span = call_span("kv", "set", ns);
        telemetry::record(&span, "spike.bytes", value.len() as u64);
        traced(span, async {
            key(k)?;
            let entry = entry(value, options)?;
            self.counts.kv("set");
            self.counts.kv_bytes("written", entry.value.len());
            let quota = self.grants.storage.kv;
            Ok(self.ctx.backend.set(ns, k, entry, quota).await?)
        })
        .await
    }

    pub(crate) async fn remove(&self, ns: &str, k: &str) -> Result<bool, CapError> {
        traced(call_span("kv", "delete", ns), async {
            key(k)?;
            self.counts.kv("delete");
            Ok(self.ctx.backend.delete(ns, k).await?)
        })
        .await
    }

    pub(crate) async fn add(&self, ns: &str, k: &str, delta: i64) -> Result<i64, CapError> {
        traced(call_span("kv", "increment", ns), async {
            key(k)?;
            self.counts.kv("increment");
            let quota = self.grants.storage.kv;
            Ok(self.ctx.backend.increment(ns, k, delta, quota).await?)
        })
        .await
    }

    /// `value` under `k` if its live value is the one `expected`.
    pub(crate) async fn swap(
        &self,
        ns: &str,
        k: &str,
        expected: Expected,
        value: Vec<u8>,
        options: SetOptions,
    ) -> Result<Swap, CapError> {
        let span = call_span("kv", "compare-and-swap", ns);
        telemetry::record(&span, "spike.bytes", value.len() as u64);
        traced(span, async {
            key(k)?;
            let entry = entry(value, options)?;
            let bytes = entry.value.len();
            self.counts.kv("compare_and_swap");
            let quota = self.grants.storage.kv;
            let swap = (self.ctx.backend)
                .compare_and_swap(ns, k, expected, entry, quota)
                .await?;
            if let Swap::Done = swap {
                self.counts.kv_bytes("written", bytes);
            }
            Ok(swap)
        })
        .await
    }

    /// A page of live keys under `prefix`, after `cursor`.
    pub(crate) async fn keys(
        &self,
        ns: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<KvKey>, CapError> {
        let span = call_span("kv", "list", ns);
        let page = traced(span.clone(), async {
            self.counts.kv("list");
            let backend = &self.ctx.backend;
            Ok::<_, CapError>(backend.list(ns, prefix, cursor, limit).await?)
        })
        .await?;
        telemetry::record(&span, "spike.rows", page.items.len() as u64);
        Ok(page)
    }
}

impl wit::HostNamespace for KvView<'_> {
    async fn open(&mut self, name: String) -> Result<Resource<Namespace>, CapError> {
        self.open_granted(name)
    }

    async fn get(
        &mut self,
        ns: Resource<Namespace>,
        k: String,
    ) -> Result<Option<Vec<u8>>, CapError> {
        let ns = self.name_of(&ns)?;
        Ok(self.ops().get_entry(&ns, &k).await?.map(|e| e.value))
    }

    async fn get_with_metadata(
        &mut self,
        ns: Resource<Namespace>,
        k: String,
    ) -> Result<Option<Entry>, CapError> {
        let ns = self.name_of(&ns)?;
        Ok(self.ops().get_entry(&ns, &k).await?.map(|e| Entry {
            value: e.value,
            metadata: e.metadata,
            expires_at_ms: e.expires_at_ms,
        }))
    }

    async fn set(
        &mut self,
        ns: Resource<Namespace>,
        k: String,
        value: Vec<u8>,
        options: SetOptions,
    ) -> Result<(), CapError> {
        let ns = self.name_of(&ns)?;
        self.ops().put(&ns, &k, value, options).await
    }

    async fn delete(&mut self, ns: Resource<Namespace>, k: String) -> Result<bool, CapError> {
        let ns = self.name_of(&ns)?;
        self.ops().remove(&ns, &k).await
    }

    async fn increment(
        &mut self,
        ns: Resource<Namespace>,
        k: String,
        delta: i64,
    ) -> Result<i64, CapError> {
        let ns = self.name_of(&ns)?;
        self.ops().add(&ns, &k, delta).await
    }

    async fn compare_and_swap(
        &mut self,
        ns: Resource<Namespace>,
        k: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        options: SetOptions,
    ) -> Result<bool, CapError> {
        let ns = self.name_of(&ns)?;
        let expected = expected.map_or(Expected::Absent, Expected::Value);
        let swap = self.ops().swap(&ns, &k, expected, value, options).await?;
        Ok(swap == Swap::Done)
    }

    async fn list(
        &mut self,
        ns: Resource<Namespace>,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<KeyPage, CapError> {
        let ns = self.name_of(&ns)?;
        let limit = page_limit(limit)?;
        let page = self
            .ops()
            .keys(&ns, &prefix, cursor.as_deref(), limit)
            .await?;
        Ok(KeyPage {
            keys: page
                .items
                .into_iter()
                .map(|k| KeyInfo {
                    name: k.name,
                    metadata: k.metadata,
                    expires_at_ms: k.expires_at_ms,
                })
                .collect(),
            cursor: page.cursor,
        })
    }

    async fn drop(&mut self, ns: Resource<Namespace>) -> wasmtime::Result<()> {
        self.table.delete(ns)?;
        Ok(())
    }
}

/// The `HasData` of the KV view (`wasi:keyvalue` links through it too).
pub(crate) struct HasKv;

impl HasData for HasKv {
    type Data<'a> = KvView<'a>;
}

/// Adds `spike:host/kv` to the linker.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> KvView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasKv>(linker, view)
}

crate::metrics::series! {
    /// The KV import's series.
    pub struct KvMetrics {
        operations: Family<KindLabels, Counter> = Family::default(),
            "kv_operations", "KV calls, by operation";
        /// Value bytes `read` and `written`.
        bytes: Family<KindLabels, Counter> = Family::default(),
            "kv_bytes", "KV value bytes read and written";
    }
}

/// A view's borrows for tests: a KV on redb in a folder, for a plugin
/// granted some namespaces (`caps::wasi_keyvalue`'s tests use it too).
#[cfg(test)]
pub(crate) mod fixture {
    use super::*;
    use crate::caps::{Counts, Grants};
    use crate::storage::{Backends, StorageSettings};
    use wasmtime::component::ResourceTable;

    pub struct Fixture {
        ctx: KvCtx,
        grants: Grants,
        table: ResourceTable,
        metrics: Arc<crate::metrics::Metrics>,
        plugin: Arc<str>,
    }

    impl Fixture {
        /// A KV on redb in `dir`, for a plugin granted the namespaces
        /// `granted`.
        pub fn new(dir: &std::path::Path, granted: &[&str]) -> Self {
            let settings = StorageSettings {
                kv_sweep_interval: std::time::Duration::from_secs(3600),
            };
            let mut grants = Grants::default();
            for name in granted {
                grants.grant(Kind::Kv, *name);
            }
            Self {
                ctx: KvCtx {
                    backend: Backends::open_redb(dir, &settings).unwrap().kv,
                },
                grants,
                table: ResourceTable::new(),
                metrics: crate::metrics::Metrics::new(),
                plugin: "p".into(),
            }
        }

        pub fn view(&mut self) -> KvView<'_> {
            KvView {
                ctx: &self.ctx,
                grants: &self.grants,
                counts: Counts {
                    metrics: &self.metrics,
                    plugin: &self.plugin,
                },
                table: &mut self.table,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::Fixture;
    use super::*;
    use wit::HostNamespace;

    /// The `Host` impl on a view, as a guest would call it (no wasm).
    #[tokio::test]
    async fn view_checks_the_grant_then_serves() {
        let dir = tempfile::tempdir().unwrap();
        let mut fixture = Fixture::new(dir.path(), &["granted"]);
        let mut view = fixture.view();

        let denied = view.open("other".into()).await;
        assert!(matches!(denied, Err(CapError::AccessDenied(m)) if m.contains("'other'")));

        let ns = view.open("granted".into()).await.unwrap();
        let borrow = || Resource::<Namespace>::new_borrow(ns.rep());
        let opts = SetOptions {
            ttl_ms: None,
            metadata: Some("m".into()),
        };
        view.set(borrow(), "k".into(), b"v".to_vec(), opts)
            .await
            .unwrap();
        let got = view
            .get_with_metadata(borrow(), "k".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (got.value.as_slice(), got.metadata.as_deref()),
            (&b"v"[..], Some("m"))
        );
        assert_eq!(view.increment(borrow(), "n".into(), 5).await.unwrap(), 5);
        view.set(
            borrow(),
            "s".into(),
            b"x".to_vec(),
            SetOptions {
                ttl_ms: None,
                metadata: None,
            },
        )
        .await
        .unwrap();
        assert!(matches!(
            view.increment(borrow(), "s".into(), 1).await,
            Err(CapError::InvalidInput(m)) if m.contains("not a decimal integer")
        ));
        let page = view.list(borrow(), "".into(), None, 0).await.unwrap();
        assert_eq!(page.keys.len(), 3);
        view.drop(ns).await.unwrap();
    }

    #[tokio::test]
    async fn bad_keys_and_sizes_are_refused_before_the_backend() {
        let dir = tempfile::tempdir().unwrap();
        let mut fixture = Fixture::new(dir.path(), &["a"]);
        let mut view = fixture.view();
        let ns = view.open("a".into()).await.unwrap();
        let borrow = || Resource::<Namespace>::new_borrow(ns.rep());
        let no_options = || SetOptions {
            ttl_ms: None,
            metadata: None,
        };
        assert!(matches!(
            view.get(borrow(), "".into()).await,
            Err(CapError::InvalidInput(_))
        ));
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(matches!(
            view.set(borrow(), long, vec![], no_options()).await,
            Err(CapError::InvalidInput(_))
        ));
        let meta = SetOptions {
            ttl_ms: None,
            metadata: Some("m".repeat(MAX_METADATA_BYTES + 1)),
        };
        assert!(matches!(
            view.set(borrow(), "k".into(), vec![], meta).await,
            Err(CapError::TooLarge(_))
        ));
        let zero_ttl = SetOptions {
            ttl_ms: Some(0),
            metadata: None,
        };
        assert!(matches!(
            view.set(borrow(), "k".into(), vec![], zero_ttl).await,
            Err(CapError::InvalidInput(_))
        ));
        assert!(matches!(
            view.list(borrow(), "".into(), None, 1001).await,
            Err(CapError::InvalidInput(_))
        ));
        // A handle that is not a namespace traps.
        let bogus = Resource::<Namespace>::new_borrow(9999);
        assert!(matches!(
            view.get(bogus, "k".into()).await,
            Err(CapError::Trap(_))
        ));
    }
}
