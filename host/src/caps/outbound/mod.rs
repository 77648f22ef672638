//! Outgoing HTTP (`wasi:http/outgoing-handler`), limited to granted hosts.
//!
//! A plugin may only reach hosts its manifest lists under `grants.outbound`
//! (`pattern`). The name is checked first; then it is resolved once and every
//! address is checked (`resolve`), so that a granted public name that
//! resolves to a loopback, private or link-local address is refused unless
//! the grant itself names that address and port; and the connection goes to
//! exactly the checked addresses (`send`), never to a second lookup's answer.

mod pattern;
mod resolve;
mod send;

use std::sync::Arc;

use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::Grants;
pub use pattern::HostPattern;
pub use resolve::{Resolver, SystemResolver};

/// The host's side of outgoing HTTP: the resolver names go through.
pub struct OutboundCtx {
    pub resolver: Arc<dyn Resolver>,
}

/// The `wasi:http` hooks of one request: outgoing requests go through the
/// plugin's grants.
pub struct OutboundHooks {
    grants: Arc<Grants>,
    resolver: Arc<dyn Resolver>,
}

impl OutboundHooks {
    pub fn new(grants: Arc<Grants>, ctx: &OutboundCtx) -> Self {
        Self {
            grants,
            resolver: ctx.resolver.clone(),
        }
    }
}

type SendFuture = Box<dyn Future<Output = wasmtime_wasi_http::Result<send::Sent>> + Send>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        drop(fut);
        let (grants, resolver) = (self.grants.clone(), self.resolver.clone());
        Box::new(async move {
            let uri = request.uri();
            let host = uri.host().unwrap_or_default().to_string();
            let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            if let Err(e) = grants.check_outbound(&host, port) {
                tracing::warn!("{e}");
                return Err(HttpError::HttpRequestDenied);
            }
            let addrs = resolve::destinations(&grants, resolver.as_ref(), &host, port).await?;
            send::send(request, options, &addrs, &host).await
        })
    }
}
