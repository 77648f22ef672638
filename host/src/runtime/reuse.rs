//! Instances kept for the next request of the same plugin version, when its
//! manifest opts in with `instance_reuse = N` (as `wasmtime serve
//! --max-instance-reuse-count` does). For runtimes whose instances are
//! expensive to start (a JavaScript or Python interpreter) this is most of
//! their cost per request.
//!
//! The trade-off, which the operator takes by setting it: whatever a guest
//! leaves in its memory (globals, caches, a leaked resource) is seen by the
//! next requests of that plugin, up to N of them. Never by another plugin:
//! the idle instances belong to one version and one plugin context (its
//! grants and limits), and an instance is kept only after a call that
//! returned normally. One that trapped, hit a limit, was cut off by the
//! watchdog, or whose client went away is dropped, as a fresh one would
//! be.
//!
//! At most `max_concurrent` instances wait per version, newest first, and
//! one unused for `instance_idle_ms` (30 s by default) is dropped by the
//! watchdog's tick.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;

use super::state::{PluginContext, RequestState};
use super::watchdog::{self, Watchdog, Watched, Watching};
use crate::caps::identity::IdentityCtx;
use crate::util::unpoisoned;

/// An instance between requests.
pub struct Idle {
    pub store: Store<RequestState>,
    pub proxy: Proxy,
    /// Requests it has served.
    pub served: u32,
    /// When it is dropped if no request has taken it (watchdog time).
    expires_ms: u64,
}

type IdleList = Mutex<VecDeque<Idle>>;

/// The idle instances of one plugin version.
#[derive(Default)]
pub struct IdleInstances {
    idle: Arc<IdleList>,
    /// The watchdog's check that drops instances idle too long, registered
    /// with the first instance kept.
    expiry: OnceLock<Watching>,
}

impl IdleInstances {
    /// An idle instance made for `context`, ready for a request of `caller`.
    /// Instances made for an earlier context of the plugin (other grants or
    /// limits) are dropped.
    pub fn take(&self, context: &Arc<PluginContext>, caller: IdentityCtx) -> Option<Idle> {
        loop {
            let mut idle = self.lock().pop_back()?;
            if Arc::ptr_eq(idle.store.data().context(), context) {
                idle.store.data_mut().begin_request(caller);
                // The deadline counts from now, as a fresh store's does.
                idle.store.set_epoch_deadline(1);
                return Some(idle);
            }
        }
    }

    /// Keeps `store` (its instance `proxy` has served `served` requests,
    /// the last of them normally) for a later request within `idle_for_ms`,
    /// if there is room; else it is dropped (after the lock: it is a
    /// parameter).
    pub fn keep(
        &self,
        store: Store<RequestState>,
        proxy: Proxy,
        served: u32,
        max_idle: u32,
        idle_for_ms: u64,
        watchdog: &Watchdog,
    ) {
        self.expiry
            .get_or_init(|| watchdog.watch(Arc::new(Expiry(Arc::downgrade(&self.idle)))));
        let mut idle = self.lock();
        if idle.len() < max_idle as usize {
            idle.push_back(Idle {
                store,
                proxy,
                served,
                expires_ms: watchdog::now_ms().saturating_add(idle_for_ms),
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        unpoisoned(self.idle.lock())
    }
}

/// Drops instances idle for their `instance_idle_ms`. It holds the list
/// weakly, so that the list goes with its version, and not the
/// `IdleInstances`: dropping that here would unregister this check from
/// within the watchdog's own tick.
struct Expiry(Weak<IdleList>);

impl Watched for Expiry {
    fn check(&self, now_ms: u64) {
        let Some(list) = self.0.upgrade() else {
            return;
        };
        // Never wait on a request taking or keeping one: next tick.
        let Ok(mut idle) = list.try_lock() else {
            return;
        };
        let mut expired = Vec::new();
        let mut i = 0;
        while i < idle.len() {
            if idle[i].expires_ms <= now_ms {
                expired.extend(idle.remove(i));
            } else {
                i += 1;
            }
        }
        drop(idle);
        drop(expired);
    }
}
