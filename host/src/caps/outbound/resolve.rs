//! Where an outgoing request may connect: the host name is resolved once,
//! every address is checked against the grants, and the connection goes to
//! exactly those addresses (`send`), so that a second lookup cannot swap in
//! another one (DNS rebinding).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::future::BoxFuture;
use wasmtime_wasi_http::Error as HttpError;

use super::pattern::{HostPattern, is_internal};

/// How long a lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Turns a host name into addresses. The host's is the system resolver;
/// tests substitute one that answers as they need.
pub trait Resolver: Send + Sync + fmt::Debug {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, std::io::Result<Vec<IpAddr>>>;
}

/// The operating system's resolver (`getaddrinfo`, through tokio).
#[derive(Debug, Clone, Copy)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, std::io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host, port))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

/// The addresses a request to `host:port` may connect to, in the resolver's
/// order. `host` has already passed the grant's name check. Refused if any
/// address is internal (loopback, private, link-local...) and no entry of
/// `allowed` (the plugin's outbound grants, the renderer's allow-list) names
/// that address and port literally: a public name must not lead inside.
pub async fn destinations(
    allowed: &[HostPattern],
    resolver: &dyn Resolver,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, HttpError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<IpAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => match tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup(bare, port)).await {
            Err(_) => return Err(HttpError::DnsTimeout),
            Ok(Err(_)) => {
                return Err(HttpError::DnsError {
                    rcode: Some("lookup failed".into()),
                    info_code: None,
                });
            }
            Ok(Ok(addrs)) => addrs,
        },
    };
    if addrs.is_empty() {
        return Err(HttpError::DestinationNotFound);
    }
    for &ip in &addrs {
        let granted = || allowed.iter().any(|g| g.names_address(ip, port));
        if is_internal(ip) && !granted() {
            tracing::warn!(%host, %ip, port, "outbound request to an internal address refused");
            return Err(HttpError::DestinationIpProhibited);
        }
    }
    Ok(addrs
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers every name with fixed addresses.
    #[derive(Debug)]
    struct Fixed(Vec<IpAddr>);

    impl Resolver for Fixed {
        fn lookup<'a>(&'a self, _: &'a str, _: u16) -> BoxFuture<'a, std::io::Result<Vec<IpAddr>>> {
            Box::pin(async move { Ok(self.0.clone()) })
        }
    }

    fn grants(entries: &[&str]) -> Vec<HostPattern> {
        entries.iter().map(|e| e.parse().unwrap()).collect()
    }

    #[tokio::test]
    async fn a_name_does_not_lead_to_loopback_unless_the_address_is_granted() {
        let to_loopback = Fixed(vec!["127.0.0.1".parse().unwrap()]);
        let g = grants(&["api.example.com"]);
        assert!(matches!(
            destinations(&g[..], &to_loopback, "api.example.com", 443).await,
            Err(HttpError::DestinationIpProhibited)
        ));
        // The address is granted, on one port only.
        let g = grants(&["api.example.com", "127.0.0.1:8851"]);
        let ok = destinations(&g[..], &to_loopback, "api.example.com", 8851).await;
        assert_eq!(ok.unwrap(), vec!["127.0.0.1:8851".parse().unwrap()]);
        assert!(matches!(
            destinations(&g[..], &to_loopback, "api.example.com", 8852).await,
            Err(HttpError::DestinationIpProhibited)
        ));
    }

    #[tokio::test]
    async fn one_internal_answer_refuses_the_name() {
        let mixed = Fixed(vec![
            "93.184.216.34".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
        ]);
        assert!(matches!(
            destinations(&grants(&["a.example"]), &mixed, "a.example", 80).await,
            Err(HttpError::DestinationIpProhibited)
        ));
        let public = Fixed(vec!["93.184.216.34".parse().unwrap()]);
        assert!(
            destinations(&grants(&["a.example"]), &public, "a.example", 80)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn literals_skip_the_resolver() {
        let never = Fixed(vec![]);
        let g = grants(&["127.0.0.1"]);
        let ok = destinations(&g[..], &never, "127.0.0.1", 80).await.unwrap();
        assert_eq!(ok, vec!["127.0.0.1:80".parse().unwrap()]);
        assert!(matches!(
            destinations(&grants(&["x.example"]), &never, "x.example", 80).await,
            Err(HttpError::DestinationNotFound)
        ));
    }
}
