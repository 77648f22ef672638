//! The linear memory all instances together may hold.
//!
//! Each plugin's `memory_mib` bounds one instance; without a total, a
//! thousand concurrent requests to a plugin that may use 128 MiB could ask
//! for 125 GiB and the kernel would kill the host. Every memory an instance
//! creates or grows is reserved here first; a reservation past the budget
//! fails the request with 503 `busy` instead. An instance's reservation is
//! returned when its store is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The budget, shared by every store.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    reserved: AtomicU64,
}

/// The budget was spent: the request is refused, not the host killed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the server is at its memory budget of {limit_mib} MiB for plugin instances")]
pub struct MemoryBudgetExhausted {
    pub limit_mib: u64,
}

impl MemoryBudget {
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            reserved: AtomicU64::new(0),
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes reserved by live instances now.
    pub fn reserved(&self) -> u64 {
        self.reserved.load(Ordering::Relaxed)
    }

    /// Reserves `bytes`, or fails without reserving anything.
    pub fn reserve(&self, bytes: u64) -> Result<(), MemoryBudgetExhausted> {
        let mut current = self.reserved.load(Ordering::Relaxed);
        loop {
            let next = current.saturating_add(bytes);
            if next > self.limit {
                return Err(MemoryBudgetExhausted {
                    limit_mib: self.limit >> 20,
                });
            }
            match self.reserved.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
    }

    /// Returns bytes reserved earlier.
    pub fn release(&self, bytes: u64) {
        self.reserved.fetch_sub(bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_up_to_the_limit_and_releases() {
        let budget = MemoryBudget::new(100);
        budget.reserve(60).unwrap();
        assert!(budget.reserve(41).is_err(), "60 + 41 is past 100");
        assert_eq!(budget.reserved(), 60, "a failed reservation takes nothing");
        budget.reserve(40).unwrap();
        budget.release(60);
        budget.reserve(50).unwrap();
        assert_eq!(budget.reserved(), 90);
    }

    #[test]
    fn concurrent_reservations_never_pass_the_limit() {
        let budget = MemoryBudget::new(1000);
        let granted = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        if budget.reserve(7).is_ok() {
                            granted.fetch_add(7, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(granted.load(Ordering::Relaxed), budget.reserved());
        assert!(budget.reserved() <= 1000);
        assert!(budget.reserved() > 1000 - 7);
    }
}
