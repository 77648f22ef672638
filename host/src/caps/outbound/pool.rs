//! Kept-alive connections to upstreams, reused by later requests of the
//! same plugin version to the same host: a fresh instance per request must
//! not mean a fresh TCP (and TLS) handshake per outgoing request.
//!
//! A connection goes back to the pool only once its response body has been
//! read to the end (`send::PooledBody`), and is handed out again only to a
//! request under the very grants it was opened under (the same `Arc`), for
//! the same scheme, host and port: the address it was checked against then
//! still holds, and one plugin never rides on another's connection. Idle
//! connections are bounded per destination and closed after
//! [`IDLE_TIMEOUT`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;
use wasmtime_wasi_http::WasiBody;

use crate::caps::Grants;
use crate::util::unpoisoned;

/// How long a connection may sit idle before it is closed. Shorter than
/// the idle timeouts servers commonly keep (60 s and more), so that a
/// pooled connection is rarely one the server is about to close.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Idle connections kept per destination, at most.
const MAX_IDLE_PER_DESTINATION: usize = 32;

/// Where a connection goes, and under which grants it was opened.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// The grants' address: compared together with the `Arc` kept in each
    /// idle connection (so an address reused after a free never matches).
    grants: usize,
    https: bool,
    host: String,
    port: u16,
}

impl Destination {
    pub fn new(grants: &Arc<Grants>, https: bool, host: &str, port: u16) -> Self {
        Self {
            grants: Arc::as_ptr(grants) as usize,
            https,
            host: host.to_string(),
            port,
        }
    }
}

struct Idle {
    sender: SendRequest<WasiBody>,
    grants: Arc<Grants>,
    since: Instant,
}

/// The idle connections of every plugin.
#[derive(Default)]
pub struct ConnectionPool {
    idle: Mutex<HashMap<Destination, Vec<Idle>>>,
}

impl ConnectionPool {
    /// A pool whose stale connections a task closes every few seconds,
    /// until the pool is dropped.
    pub fn start() -> Arc<Self> {
        let pool = Arc::new(Self::default());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep_every(Arc::downgrade(&pool), IDLE_TIMEOUT / 4));
        }
        pool
    }

    /// An open idle connection to `to` opened under `grants`, if any. It
    /// may still be finishing its last exchange: wait for `ready()`.
    pub fn checkout(
        &self,
        to: &Destination,
        grants: &Arc<Grants>,
    ) -> Option<SendRequest<WasiBody>> {
        let mut idle = unpoisoned(self.idle.lock());
        let list = idle.get_mut(to)?;
        // The most recently used first: the least likely to be stale.
        while let Some(conn) = list.pop() {
            if Arc::ptr_eq(&conn.grants, grants)
                && conn.since.elapsed() < IDLE_TIMEOUT
                && !conn.sender.is_closed()
            {
                return Some(conn.sender);
            }
        }
        None
    }

    /// Keeps `sender`, whose last exchange is complete, for the next
    /// request to `to`.
    pub fn checkin(&self, to: Destination, grants: Arc<Grants>, sender: SendRequest<WasiBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = unpoisoned(self.idle.lock());
        let list = idle.entry(to).or_default();
        if list.len() >= MAX_IDLE_PER_DESTINATION {
            // Dropping the oldest closes it.
            list.remove(0);
        }
        list.push(Idle {
            sender,
            grants,
            since: Instant::now(),
        });
    }

    /// Closes connections idle for longer than [`IDLE_TIMEOUT`] or closed
    /// by their server.
    fn sweep(&self) {
        let mut idle = unpoisoned(self.idle.lock());
        idle.retain(|_, list| {
            list.retain(|c| c.since.elapsed() < IDLE_TIMEOUT && !c.sender.is_closed());
            !list.is_empty()
        });
    }

    /// Idle connections held now, for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.idle.lock().unwrap().values().map(Vec::len).sum()
    }
}

async fn sweep_every(pool: Weak<ConnectionPool>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match pool.upgrade() {
            Some(pool) => pool.sweep(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_are_reused_only_under_the_same_grants() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // A server that keeps each connection open and answers nothing.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let connect = || async {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender
        };
        let pool = ConnectionPool::default();
        let (a, b) = (Arc::new(Grants::new(vec![])), Arc::new(Grants::new(vec![])));
        let to_a = Destination::new(&a, false, "127.0.0.1", addr.port());
        pool.checkin(to_a.clone(), a.clone(), connect().await);
        assert_eq!(pool.len(), 1);
        // Other grants (another plugin) with the same host: no reuse.
        let to_b = Destination::new(&b, false, "127.0.0.1", addr.port());
        assert!(pool.checkout(&to_b, &b).is_none());
        assert!(
            pool.checkout(&to_a, &b).is_none(),
            "a key that claims grants it lacks"
        );
        pool.checkin(to_a.clone(), a.clone(), connect().await);
        assert!(pool.checkout(&to_a, &a).is_some());
        assert!(pool.checkout(&to_a, &a).is_none());
    }
}
