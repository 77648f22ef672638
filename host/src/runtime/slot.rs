//! One plugin as the registry holds it: its manifest, the capability
//! context built from it, the active version, and the count of its requests
//! in flight. A manifest change replaces the slot whole (see `live`), so a
//! request that took a slot runs under one manifest from start to end.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;

use super::engine::PoolSettings;
use super::loader::{LoadError, LoadedPlugin};
use super::manifest::{LimitKey, Manifest, RouteAuth, RouteLimit};
use super::memory_budget::MemoryBudget;
use super::state::PluginContext;
use crate::caps::Caps;
use crate::caps::rate_limit::{Limiter, RateLimits};
use crate::metrics::Metrics;
use crate::util::now_ms;
use crate::util::unpoisoned;

/// One plugin: manifest, context and the active version.
pub struct PluginSlot {
    pub manifest: Manifest,
    /// When this manifest came into force.
    pub since_ms: u64,
    pub context: Arc<PluginContext>,
    /// What each route (by its place in the manifest), then each room,
    /// asks of a request before the plugin runs.
    pub policies: Vec<RoutePolicy>,
    /// Requests of this plugin that may run at once (`limits.max_concurrent`,
    /// or a share of the instance pool): one plugin's slow clients wait on
    /// their own permits, never on the other plugins' instances.
    pub max_concurrent: u32,
    /// Of those, what one client address may have (`limits.
    /// max_concurrent_per_client`), if capped.
    pub per_client: Option<Arc<super::per_client::PerClient>>,
    running: Arc<AtomicU32>,
    pub(super) active: ArcSwapOption<LoadedPlugin>,
    /// Until its first load ends (ready or failed).
    pub(super) loading: AtomicBool,
    last_error: Mutex<Option<LoadError>>,
    /// Serialises swaps of this plugin (uploads, file changes, rollbacks,
    /// manifest changes); shared by the slots that follow one another.
    pub(super) swap_lock: Arc<tokio::sync::Mutex<()>>,
}

/// What a slot is built from, besides its manifest.
pub(super) struct SlotParts<'a> {
    pub caps: &'a Arc<Caps>,
    pub memory_budget: &'a Arc<MemoryBudget>,
    pub metrics: &'a Arc<Metrics>,
    pub pool: &'a PoolSettings,
}

/// What the host does on one route before its plugin runs: who must be
/// calling, and how often they may.
pub struct RoutePolicy {
    pub auth: Option<RouteAuth>,
    pub rate_limit: Option<RouteLimiter>,
}

/// A route's limiter, and whom it counts.
pub struct RouteLimiter {
    pub limiter: Arc<Limiter>,
    pub key: LimitKey,
}

impl RoutePolicy {
    /// For `prefix` (`what` tells a route from a room in the limiter's
    /// name).
    fn new(
        plugin: &str,
        what: &str,
        auth: &Option<RouteAuth>,
        limit: RouteLimit,
        limits: &RateLimits,
    ) -> Self {
        let rule = match limit {
            RouteLimit::Rule { rule, key } => Some((rule, key)),
            RouteLimit::Default => limits.route_default.map(|rule| (rule, LimitKey::Ip)),
            RouteLimit::Off => None,
        };
        Self {
            auth: auth.clone(),
            rate_limit: rule.map(|(rule, key)| RouteLimiter {
                // By prefix and methods, so that an edit elsewhere in the
                // manifest keeps this route's counts.
                limiter: limits.limiter(plugin, what, rule),
                key,
            }),
        }
    }
}

impl PluginSlot {
    /// A slot for `manifest`, loading, with no version yet; the swap lock
    /// of the slot it follows, if any.
    pub(super) fn new(
        manifest: Manifest,
        parts: &SlotParts<'_>,
        swap_lock: Option<Arc<tokio::sync::Mutex<()>>>,
    ) -> Self {
        if manifest.limits.memory_bytes > parts.memory_budget.limit() {
            tracing::warn!(
                plugin = %manifest.name,
                "memory_mib is above the host's memory budget: its requests may be refused as busy"
            );
        }
        let max_concurrent = manifest
            .limits
            .max_concurrent
            .unwrap_or_else(|| default_max_concurrent(parts.pool.max_instances))
            .min(parts.pool.max_instances.max(1));
        let context = PluginContext::new(
            parts.caps,
            &manifest,
            parts.memory_budget.clone(),
            parts.metrics,
        );
        let limits = context.caps.rate_limits();
        let name = &manifest.name;
        let routes = manifest.routes.iter().map(|r| {
            let what = format!("route {} {:?}", r.prefix, r.methods);
            RoutePolicy::new(name, &what, &r.auth, r.rate_limit, limits)
        });
        let rooms = manifest.rooms.iter().map(|r| {
            let what = format!("room {}", r.prefix);
            RoutePolicy::new(name, &what, &r.auth, r.rate_limit, limits)
        });
        let policies = routes.chain(rooms).collect();
        let per_client = (manifest.limits.max_concurrent_per_client)
            .map(|max| super::per_client::PerClient::new(max as usize));
        Self {
            context,
            policies,
            per_client,
            manifest,
            since_ms: now_ms(),
            max_concurrent,
            running: Arc::default(),
            active: ArcSwapOption::empty(),
            loading: AtomicBool::new(true),
            last_error: Mutex::new(None),
            swap_lock: swap_lock.unwrap_or_default(),
        }
    }

    /// The version new requests should use, if any loaded.
    pub fn active(&self) -> Option<Arc<LoadedPlugin>> {
        self.active.load_full()
    }

    pub(super) fn count_swap(&self, outcome: &'static str) {
        let metrics = &self.context.metrics;
        Metrics::count(&metrics.host.instances.swaps, &metrics.plugin, outcome, 1);
    }

    /// Whether the plugin's first load is still under way.
    pub fn is_loading(&self) -> bool {
        self.loading.load(Ordering::Acquire)
    }

    /// The most recent load failure, if the last attempt failed. For the
    /// log and the admin API only: it may name files of the host.
    pub fn last_error(&self) -> Option<String> {
        unpoisoned(self.last_error.lock())
            .as_ref()
            .map(ToString::to_string)
    }

    pub(super) fn set_error(&self, e: Option<LoadError>) {
        *unpoisoned(self.last_error.lock()) = e;
    }

    /// Forgets a refused manifest edit (the manifest in force is back).
    pub(super) fn clear_manifest_error(&self) {
        let mut error = unpoisoned(self.last_error.lock());
        if matches!(
            *error,
            Some(LoadError::Manifest(_) | LoadError::Conflict(_))
        ) {
            *error = None;
        }
    }

    pub(super) fn error_is_unreadable_file(&self) -> bool {
        matches!(
            *unpoisoned(self.last_error.lock()),
            Some(LoadError::Read { .. })
        )
    }

    /// A permit to run one request, held until its instance is gone; `None`
    /// when the plugin is at `max_concurrent`. (A counter, not a semaphore:
    /// nobody waits for a permit, and releasing one takes no lock.)
    pub fn try_admit(&self) -> Option<Admitted> {
        let before = self.running.fetch_add(1, Ordering::AcqRel);
        if before >= self.max_concurrent {
            self.running.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Admitted(self.running.clone()))
    }

    /// Requests running now.
    pub fn in_flight(&self) -> u32 {
        self.running
            .load(Ordering::Relaxed)
            .min(self.max_concurrent)
    }
}

/// One running request of a plugin; dropping it makes room for another.
pub struct Admitted(Arc<AtomicU32>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The share of the instance pool a plugin gets when its manifest sets no
/// `max_concurrent`: half, enough for a busy plugin, while slow clients of
/// one plugin leave the other half to the rest.
pub fn default_max_concurrent(max_instances: u32) -> u32 {
    (max_instances / 2).max(1)
}

/// Where a request goes.
pub struct Routed {
    pub slot: Arc<PluginSlot>,
    /// The route prefix that matched.
    pub route: Arc<str>,
    /// Which of the slot's `policies` applies.
    pub index: usize,
    /// A `HEAD` the plugin is to run as `GET` (the server drops the body).
    pub head_as_get: bool,
    /// Which of the plugin's rooms, if it is a room route.
    pub room: Option<usize>,
}
