//! How many of something each client address holds at once (room
//! sockets, a plugin's requests in progress), up to a cap: one client
//! cannot take what many share. Keys are the rate limits' address keys
//! (an IPv6 address by its /64).

use crate::util::unpoisoned;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub struct PerClient {
    max: usize,
    held: Mutex<HashMap<String, usize>>,
}

/// One place held by a client, given back when dropped.
pub struct Held {
    owner: Arc<PerClient>,
    key: String,
}

impl PerClient {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            held: Mutex::default(),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A place for `key`, or `None` if it holds `max` already.
    pub fn try_hold(self: &Arc<Self>, key: String) -> Option<Held> {
        let mut held = unpoisoned(self.held.lock());
        let count = held.entry(key.clone()).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Held {
            owner: self.clone(),
            key,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = unpoisoned(self.owner.held.lock());
        if let Some(count) = held.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_holds_up_to_the_cap_and_gives_back() {
        let per = PerClient::new(2);
        let a1 = per.try_hold("a".into()).unwrap();
        let _a2 = per.try_hold("a".into()).unwrap();
        assert!(per.try_hold("a".into()).is_none());
        let _b = per.try_hold("b".into()).unwrap();
        drop(a1);
        assert!(per.try_hold("a".into()).is_some());
        drop(_a2);
        assert!(per.held.lock().unwrap().get("a").is_none_or(|n| *n <= 1));
    }
}
