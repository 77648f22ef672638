//! A plugin quota shared by every node of a cluster: the same GCRA as
//! `Limiter` (a burst of `requests`, then one every `per / requests`), its
//! one number per key (the theoretical arrival time, in microseconds of
//! the wall clock) kept in the cluster's shared numbers and changed by
//! compare-and-set, so that N nodes allow what one node would, not N
//! times it. The nodes' clocks should agree (NTP): a node whose clock is
//! ahead spends allowance a little early.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use super::{Decision, Rule};
use crate::caps::CapError;
use crate::storage::Cluster;

pub struct SharedQuota {
    cluster: Arc<dyn Cluster>,
    /// The key prefix: plugin, quota and rule (an edited rule starts over).
    scope: String,
    pub rule: Rule,
}

/// Compare-and-set attempts before a check fails as unavailable: the
/// writers of one key would have to be very many, all at once.
const ATTEMPTS: usize = 64;

/// What one check decides from the stored arrival time `tat` at `now`
/// (both µs), and the arrival time to store if it is allowed.
fn gcra(rule: Rule, tat: Option<u64>, now: u64, cost: u32) -> (Decision, Option<u64>) {
    let limit = rule.requests.get();
    let period = rule.per.as_micros() as u64;
    let interval = (period / u64::from(limit)).max(1);
    let start = tat.unwrap_or(now).max(now);
    let new_tat = start + interval * u64::from(cost);
    let ahead = new_tat - now;
    if ahead > period {
        let decision = Decision {
            allowed: false,
            limit,
            remaining: 0,
            retry_after: Duration::from_micros(ahead - period),
            reset: Duration::from_micros(start - now),
        };
        return (decision, None);
    }
    let decision = Decision {
        allowed: true,
        limit,
        remaining: ((period - ahead) / interval) as u32,
        retry_after: Duration::ZERO,
        reset: Duration::from_micros(ahead),
    };
    (decision, Some(new_tat))
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl SharedQuota {
    pub fn new(cluster: Arc<dyn Cluster>, plugin: &str, quota: &str, rule: Rule) -> Self {
        let scope = format!(
            "{plugin}/{quota}/{}per{}/",
            rule.requests,
            rule.per.as_secs()
        );
        Self {
            cluster,
            scope,
            rule,
        }
    }

    /// Counts `cost` requests for `key` on every node, if they fit.
    pub async fn check(&self, key: &str, cost: NonZeroU32) -> Result<Decision, CapError> {
        let limit = self.rule.requests.get();
        if cost.get() > limit {
            return Err(CapError::InvalidInput(format!(
                "a cost of {cost} is more than this quota's {limit} requests per {} s",
                self.rule.per.as_secs()
            )));
        }
        let key = format!("{}{key}", self.scope);
        for _ in 0..ATTEMPTS {
            let (tat, revision) = self.cluster.number(&key).await?;
            let now = now_us();
            let (decision, store) = gcra(self.rule, tat, now, cost.get());
            let Some(new_tat) = store else {
                return Ok(decision);
            };
            // Kept while it still holds back a request (at least a second:
            // the server's TTLs are whole seconds).
            let ttl = Duration::from_micros(new_tat - now).max(Duration::from_secs(1));
            if self
                .cluster
                .set_number(&key, new_tat, revision, ttl)
                .await?
            {
                return Ok(decision);
            }
        }
        Err(CapError::Internal(
            "the shared quota is too contended: try again".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_interval_like_the_local_limiter() {
        let rule = Rule::new(4, 2).unwrap(); // 4 per 2 s: one per 500 ms
        let (mut tat, now) = (None, 1_000_000_000);
        for left in (0..4).rev() {
            let (d, next) = gcra(rule, tat, now, 1);
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
            tat = next;
        }
        let (d, next) = gcra(rule, tat, now, 1);
        assert!(!d.allowed && next.is_none());
        assert_eq!(d.retry_after, Duration::from_millis(500));
        let (d, _) = gcra(rule, tat, now + 500_000, 1);
        assert!(d.allowed);
        // A cost counts whole or not at all.
        let (d, _) = gcra(rule, tat, now + 500_000, 2);
        assert!(!d.allowed);
        // A lapsed state is a fresh one.
        let (d, _) = gcra(rule, None, now, 4);
        assert!(d.allowed && d.remaining == 0);
    }
}
