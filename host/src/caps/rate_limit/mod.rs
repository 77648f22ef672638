//! Rate limits: the host's limits on routes (`rate_limit` in a route of the
//! manifest), and the `spike:host/rate-limit` capability through which a
//! plugin keeps its own quotas (`[quotas.<name>]`).
//!
//! Both are one engine: a `Limiter` per rule, keyed (by client address,
//! user, or whatever key a plugin picks), on `governor`'s GCRA. A rule of
//! `requests` per `per_s` seconds lets a burst of `requests` through and
//! then one more every `per_s / requests`: a sliding allowance, without the
//! double burst a fixed window allows at its boundary.
//!
//! Memory stays bounded however many keys arrive: keys whose state is back
//! to fresh are dropped by a sweep every few seconds, and a limiter that is
//! full after a sweep counts new keys together under one shared key (they
//! are limited as one client) until room comes back.
//!
//! On a cluster, plugin quotas are the cluster's (`shared`): a user's AI
//! quota is one quota whichever node serves them. Route limits by client
//! address stay each node's own: checked before any instance on every
//! request, they must not wait on the network (`docs/operating.md`).

mod shared;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use governor::RateLimiter;
use governor::clock::{Clock, QuantaClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::{CapError, View};
use crate::bindings::spike::host::rate_limit as wit;
use crate::metrics::{KindLabels, Metrics};
use crate::util::unpoisoned;
use tracing::Instrument;

/// Keys one limiter holds at most.
pub const MAX_KEYS: usize = 100_000;

/// The key new clients share while a limiter is full.
const OVERFLOW_KEY: &str = "\u{0}overflow";

/// How often idle keys are dropped.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// A limit: `requests` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rule {
    pub requests: NonZeroU32,
    pub per: Duration,
}

impl Rule {
    /// A rule of `requests` per `per_s` seconds; both at least 1.
    pub fn new(requests: u32, per_s: u32) -> Result<Self, String> {
        let requests =
            NonZeroU32::new(requests).ok_or_else(|| "requests must be at least 1".to_string())?;
        if per_s == 0 {
            return Err("per_s must be at least 1".into());
        }
        Ok(Self {
            requests,
            per: Duration::from_secs(per_s.into()),
        })
    }

    fn quota(&self) -> governor::Quota {
        // `per` is at least a second and `requests` at most u32::MAX, so
        // the interval is at least a fraction of a nanosecond: never zero
        // after the max(1).
        let interval = (self.per / self.requests.get()).max(Duration::from_nanos(1));
        governor::Quota::with_period(interval)
            .expect("a non-zero period")
            .allow_burst(self.requests)
    }
}

impl std::str::FromStr for Rule {
    type Err = String;

    /// `100/60`: 100 requests per 60 seconds.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not a rate limit: write requests/seconds, e.g. 100/60");
        let (requests, per_s) = s.split_once('/').ok_or_else(bad)?;
        let requests = requests.trim().parse().map_err(|_| bad())?;
        let per_s = per_s.trim().parse().map_err(|_| bad())?;
        Self::new(requests, per_s)
    }
}

/// What a check decided, with what the client may be told of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests the rule allows per period.
    pub limit: u32,
    /// Requests left now (0 when refused).
    pub remaining: u32,
    /// When refused: how long until the request would fit.
    pub retry_after: Duration,
    /// How long until the allowance is whole again.
    pub reset: Duration,
}

type Keyed =
    RateLimiter<String, DashMapStateStore<String>, QuantaClock, StateInformationMiddleware>;

/// One rule's state for every key.
pub struct Limiter {
    pub rule: Rule,
    inner: Keyed,
    /// When a full limiter last swept itself (milliseconds since
    /// `created`), so that a flood of new keys does not sweep on every
    /// request.
    last_full_sweep: AtomicU64,
    created: Instant,
    clock: QuantaClock,
}

impl Limiter {
    pub fn new(rule: Rule) -> Self {
        let clock = QuantaClock::default();
        Self {
            rule,
            inner: RateLimiter::dashmap_with_clock(rule.quota(), clock.clone())
                .with_middleware::<StateInformationMiddleware>(),
            last_full_sweep: AtomicU64::new(0),
            created: Instant::now(),
            clock,
        }
    }

    /// Counts `cost` requests for `key`, if they fit.
    pub fn check(&self, key: &str, cost: NonZeroU32) -> Result<Decision, CapError> {
        let key = self.admit_key(key);
        let limit = self.rule.requests.get();
        let interval = self.rule.per / limit;
        match self.inner.check_key_n(&key, cost) {
            Ok(Ok(state)) => {
                let remaining = state.remaining_burst_capacity();
                Ok(Decision {
                    allowed: true,
                    limit,
                    remaining,
                    retry_after: Duration::ZERO,
                    reset: interval * (limit - remaining),
                })
            }
            Ok(Err(not_until)) => {
                let retry_after = not_until.wait_time_from(self.clock.now());
                Ok(Decision {
                    allowed: false,
                    limit,
                    remaining: 0,
                    retry_after,
                    reset: interval * limit,
                })
            }
            Err(_) => Err(CapError::InvalidInput(format!(
                "a cost of {cost} is more than this quota's {limit} requests per {} s",
                self.rule.per.as_secs()
            ))),
        }
    }

    /// The key to count under: `key`, or the shared overflow key when the
    /// limiter is full even after dropping idle keys.
    fn admit_key(&self, key: &str) -> String {
        if self.inner.len() < MAX_KEYS {
            return key.to_string();
        }
        let now = self.created.elapsed().as_millis() as u64;
        let last = self.last_full_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self
                .last_full_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.sweep();
        }
        if self.inner.len() < MAX_KEYS {
            key.to_string()
        } else {
            OVERFLOW_KEY.to_string()
        }
    }

    /// Drops keys whose allowance is whole again.
    fn sweep(&self) {
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
    }

    /// Keys held now.
    pub fn keys(&self) -> usize {
        self.inner.len()
    }
}

/// Which limiter: whose, for what, under which rule. A manifest edit that
/// keeps a rule keeps its limiter and the counts in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LimiterId {
    plugin: String,
    scope: String,
    rule: Rule,
}

/// Every limiter of the host, so that one sweep keeps them all small, and
/// the server's default rule for routes that set none.
pub struct RateLimits {
    limiters: Mutex<HashMap<LimiterId, Weak<Limiter>>>,
    /// For routes whose manifest says nothing (`--rate-limit`).
    pub route_default: Option<Rule>,
    /// Where plugin quotas are kept when the node is one of a cluster.
    cluster: Option<Arc<dyn crate::storage::Cluster>>,
}

/// A plugin's quota: this node's, or the cluster's.
#[derive(Clone)]
pub enum Quota {
    Local(Arc<Limiter>),
    Shared(Arc<shared::SharedQuota>),
}

impl Quota {
    async fn check(&self, key: &str, cost: NonZeroU32) -> Result<Decision, CapError> {
        match self {
            Quota::Local(limiter) => limiter.check(key, cost),
            Quota::Shared(quota) => quota.check(key, cost).await,
        }
    }
}

impl RateLimits {
    /// The limiters, swept every few seconds for as long as they live.
    pub fn start(
        route_default: Option<Rule>,
        cluster: Option<Arc<dyn crate::storage::Cluster>>,
        metrics: &Arc<Metrics>,
    ) -> Arc<Self> {
        let limits = Arc::new(Self {
            limiters: Mutex::default(),
            route_default,
            cluster,
        });
        let weak = Arc::downgrade(&limits);
        let keys = metrics.rate_limit.keys.clone();
        // A thread, not a task: a sweep of a large limiter takes a few
        // milliseconds, which no async worker should spend.
        std::thread::Builder::new()
            .name("spike-rate-limit-sweep".into())
            .spawn(move || {
                while let Some(limits) = weak.upgrade() {
                    keys.set(limits.sweep() as i64);
                    drop(limits);
                    std::thread::sleep(SWEEP_INTERVAL);
                }
            })
            .expect("spawning the rate limit sweeper");
        limits
    }

    /// The limiter of `plugin` for `scope` (a route, a quota) under `rule`:
    /// the one already in use if there is one.
    pub fn limiter(&self, plugin: &str, scope: &str, rule: Rule) -> Arc<Limiter> {
        let id = LimiterId {
            plugin: plugin.into(),
            scope: scope.into(),
            rule,
        };
        let mut limiters = unpoisoned(self.limiters.lock());
        if let Some(live) = limiters.get(&id).and_then(Weak::upgrade) {
            return live;
        }
        let limiter = Arc::new(Limiter::new(rule));
        limiters.insert(id, Arc::downgrade(&limiter));
        limiter
    }

    /// The quota `quota` of `plugin` under `rule`: the cluster's if the
    /// node is one of a cluster, else a limiter of this node.
    pub fn quota(&self, plugin: &str, quota: &str, rule: Rule) -> Quota {
        match &self.cluster {
            Some(cluster) => Quota::Shared(Arc::new(shared::SharedQuota::new(
                cluster.clone(),
                plugin,
                quota,
                rule,
            ))),
            None => Quota::Local(self.limiter(plugin, &format!("quota {quota}"), rule)),
        }
    }

    /// Drops idle keys of every limiter, and forgets limiters no manifest
    /// uses any more. Returns the keys left.
    fn sweep(&self) -> usize {
        let live: Vec<Arc<Limiter>> = {
            let mut limiters = unpoisoned(self.limiters.lock());
            limiters.retain(|_, l| l.strong_count() > 0);
            limiters.values().filter_map(Weak::upgrade).collect()
        };
        live.iter()
            .map(|l| {
                l.sweep();
                l.keys()
            })
            .sum()
    }
}

/// A plugin's quotas, by name, as its manifest declares them.
pub type Quotas = HashMap<String, Quota>;

/// The view that implements the rate-limit `Host` trait.
pub type RateLimitView<'a> = View<'a, Quotas>;

impl wit::Host for RateLimitView<'_> {
    async fn check(
        &mut self,
        quota: String,
        key: String,
        cost: u32,
    ) -> Result<wit::Decision, CapError> {
        let span = super::call_span("rate-limit", "check", &quota);
        let decided = self
            .decide(&quota, &key, cost)
            .instrument(span.clone())
            .await;
        match &decided {
            Ok(d) => {
                let outcome = if d.allowed { "allowed" } else { "refused" };
                span.record("spike.outcome", outcome);
            }
            Err(e) => crate::telemetry::failed(&span, crate::telemetry::ErrorType::error_type(e)),
        }
        decided
    }
}

impl RateLimitView<'_> {
    async fn decide(
        &mut self,
        quota: &str,
        key: &str,
        cost: u32,
    ) -> Result<wit::Decision, CapError> {
        let limiter = self.ctx.get(quota).cloned().ok_or_else(|| {
            CapError::AccessDenied(format!(
                "quota '{quota}' is not declared in this plugin's manifest ([quotas.{quota}])"
            ))
        })?;
        super::check_key("quota key", key, 512)?;
        let cost = NonZeroU32::new(cost)
            .ok_or_else(|| CapError::InvalidInput("cost must be at least 1".into()))?;
        let d = limiter.check(key, cost).await?;
        self.counts
            .quota(if d.allowed { "allowed" } else { "refused" });
        Ok(wit::Decision {
            allowed: d.allowed,
            limit: d.limit.into(),
            remaining: d.remaining.into(),
            retry_after_ms: d.retry_after.as_millis().try_into().unwrap_or(u64::MAX),
        })
    }
}

struct HasRateLimit;

impl wasmtime::component::HasData for HasRateLimit {
    type Data<'a> = RateLimitView<'a>;
}

/// Adds `spike:host/rate-limit` to the linker.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    view: fn(&mut T) -> RateLimitView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasRateLimit>(linker, view)
}

crate::metrics::series! {
    /// The rate limiters' series (routes' refusals are the server's).
    pub struct RateLimitMetrics {
        /// Quota checks through `rate-limit`: `allowed`, `refused`.
        quota_checks: Family<KindLabels, Counter> = Family::default(),
            "quota_checks", "Quota checks through rate-limit, by decision";
        /// Keys held by all limiters, after the last sweep.
        keys: Gauge = Gauge::default(),
            "rate_limit_keys", "Keys held by all rate limiters, after the last sweep";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: NonZeroU32 = NonZeroU32::MIN;

    #[test]
    fn rules_parse() {
        let r: Rule = "100/60".parse().unwrap();
        assert_eq!(r.requests.get(), 100);
        assert_eq!(r.per, Duration::from_secs(60));
        for bad in ["100", "0/60", "100/0", "x/60", "100/-1", ""] {
            assert!(bad.parse::<Rule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_burst_then_one_per_interval() {
        let limiter = Limiter::new(Rule::new(3, 3).unwrap());
        for left in [2, 1, 0] {
            let d = limiter.check("a", ONE).unwrap();
            assert!(d.allowed);
            assert_eq!((d.limit, d.remaining), (3, left));
        }
        let refused = limiter.check("a", ONE).unwrap();
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        // One request comes back every second.
        assert!(refused.retry_after <= Duration::from_secs(1));
        assert!(refused.retry_after > Duration::from_millis(900));
        // Other keys are counted apart.
        assert!(limiter.check("b", ONE).unwrap().allowed);
    }

    #[test]
    fn costs_count_whole_or_not_at_all() {
        let limiter = Limiter::new(Rule::new(10, 60).unwrap());
        let seven = NonZeroU32::new(7).unwrap();
        assert_eq!(limiter.check("k", seven).unwrap().remaining, 3);
        assert!(!limiter.check("k", seven).unwrap().allowed);
        assert_eq!(limiter.check("k", ONE).unwrap().remaining, 2);
        let too_much = limiter.check("k", NonZeroU32::new(11).unwrap());
        assert!(matches!(too_much, Err(CapError::InvalidInput(_))));
    }

    #[test]
    fn idle_keys_are_dropped_and_a_full_limiter_shares_one_key() {
        // Ten per second: an allowance is whole again 100 ms after one use.
        let limiter = Limiter::new(Rule::new(10, 1).unwrap());
        for i in 0..MAX_KEYS {
            limiter.check(&i.to_string(), ONE).unwrap();
        }
        assert_eq!(limiter.keys(), MAX_KEYS);
        // Full, and nothing idle yet: newcomers share the overflow key.
        let ten = NonZeroU32::new(10).unwrap();
        assert!(limiter.check("new-1", ten).unwrap().allowed);
        assert!(!limiter.check("new-2", ONE).unwrap().allowed);
        assert!(limiter.keys() <= MAX_KEYS + 1);
        // Soon every allowance is whole again (the overflow key's, spent
        // whole, after a second): all dropped. With room for a loaded
        // machine's scheduling (1.1 s failed under a parallel test run).
        std::thread::sleep(Duration::from_millis(1600));
        limiter.sweep();
        assert_eq!(limiter.keys(), 0);
        assert!(limiter.check("new-2", ONE).unwrap().allowed);
    }

    #[test]
    fn limiters_are_shared_by_rule_and_scope() {
        let limits = RateLimits::start(None, None, &Metrics::new());
        let rule = Rule::new(5, 60).unwrap();
        let a = limits.limiter("p", "route 0", rule);
        assert!(Arc::ptr_eq(&a, &limits.limiter("p", "route 0", rule)));
        let other = Rule::new(6, 60).unwrap();
        assert!(!Arc::ptr_eq(&a, &limits.limiter("p", "route 0", other)));
        assert!(!Arc::ptr_eq(&a, &limits.limiter("p", "route 1", rule)));
        drop(a);
        limits.sweep();
        assert_eq!(
            limits.limiters.lock().unwrap().len(),
            0,
            "unused limiters are forgotten"
        );
    }
}
