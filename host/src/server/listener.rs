//! Accepting connections: how many may be open, how long a client may take
//! to send a request head, and stopping without cutting requests short.
//!
//! HTTP/1.1 only (WebSocket upgrades included): plain-text HTTP/2 would
//! need its own bounds on idle and slow connections, and browsers speak
//! HTTP/2 only over TLS, which a proxy in front of spike terminates.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::config::ClientLimits;

/// File descriptors kept for everything that is not a client connection:
/// the database, blob bodies being streamed, compile-cache files, outbound
/// connections, the file watcher.
const RESERVED_FDS: u64 = 256;

/// What a connection beyond the cap gets before it is closed.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 100\r\n\
\r\n\
{\"error\":{\"code\":\"too_many_connections\",\"message\":\"the server is at its limit of open connections\"}}";

/// How long a stop waits for connections to finish their requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection cap that the open-file limit allows: the soft limit is
/// raised to the hard one first (the default soft limit, 1024 on many
/// systems, is too low for a server), and if `requested` still does not fit
/// with a reserve for the host's own files, it is lowered.
pub fn connection_cap(requested: usize) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(soft), Some(hard)) = (limit.current, limit.maximum)
        && soft < hard
    {
        limit.current = Some(hard);
        if setrlimit(Resource::Nofile, limit).is_err() {
            limit.current = Some(soft);
        }
    }
    let Some(files) = limit.current else {
        return requested; // unlimited
    };
    // Each connection may also hold one file of its own (a blob body, an
    // outbound socket) while it is served.
    let fits = (files.saturating_sub(RESERVED_FDS) / 2).max(1) as usize;
    if requested > fits {
        tracing::warn!(
            requested,
            allowed = fits,
            open_file_limit = files,
            "lowering the connection cap to fit the open-file limit (raise it with ulimit -n)"
        );
        fits
    } else {
        requested
    }
}

/// Serves `app` on `listener` until `stop` fires, then lets open
/// connections finish their requests (up to `DRAIN_TIMEOUT`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ClientLimits,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let cap = limits.max_connections.max(1);
    let open = Arc::new(Semaphore::new(cap));
    let (draining_tx, draining) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    // hyper starts this timer whenever it waits for a request head, so it
    // bounds both a slow head (slowloris) and an idle kept-alive connection.
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            refuse(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let conn = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut draining = draining.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let drain = tokio::select! {
                _ = conn.as_mut() => false,
                _ = draining.wait_for(|d| *d) => true,
            };
            if drain {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = draining_tx.send(true);
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, open.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
}

/// Answers a connection beyond the cap with a 503 and closes it. The
/// response is small enough for an empty socket buffer, so this never
/// waits: a flood of connections costs no task each.
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(TOO_MANY_CONNECTIONS);
    tracing::warn!("connection refused: at the limit of open connections");
}

/// An accept that failed. Out of file descriptors (EMFILE) does not pass
/// by retrying at once: back off so that open connections can finish.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::error!("accepting a connection: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_well_formed() {
        let text = std::str::from_utf8(TOO_MANY_CONNECTIONS).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "too_many_connections");
    }
}
