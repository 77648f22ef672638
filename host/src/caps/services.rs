//! Service bindings: a plugin calls another plugin in-process, without the
//! network, as a Worker calls another through a service binding.
//!
//! A plugin whose manifest grants `services = ["transpiler"]` sends an
//! ordinary outgoing `wasi:http` request to
//! `http://transpiler.spike.internal/<path>`; `caps::outbound` hands it
//! here instead of resolving a name, and the request goes to that plugin's
//! HTTP handler as a client's request to `<path>` would (its routes and
//! their authentication are for clients, not for bound plugins; its own
//! limits all hold). The callee sees the caller's identity only if the
//! manifest also lists it in `identity_to`; otherwise it is called
//! anonymously. A chain of calls deeper than `MAX_DEPTH` is cut with
//! `loop-detected`, so that two plugins calling each other cannot recurse
//! until memory runs out.
//!
//! The server binds the dispatcher (`server::services`) once the plugin
//! registry exists: capabilities are built before it.

use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;
use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

use super::identity::IdentityCtx;
use super::{Grants, Kind};
use crate::metrics::{Metrics, ServiceLabels};

/// The domain under which plugins answer: `<plugin>.spike.internal`.
pub const DOMAIN: &str = "spike.internal";

/// The deepest chain of service calls: a request a client made is depth 0,
/// the call it makes depth 1, and a call at depth `MAX_DEPTH` is refused.
pub const MAX_DEPTH: u8 = 8;

/// The plugin a request's host names, if it is a service address.
pub fn service_name(host: &str) -> Option<&str> {
    let name = host.strip_suffix(DOMAIN)?.strip_suffix('.')?;
    (!name.is_empty() && !name.contains('.')).then_some(name)
}

/// What a service call carries from the request that makes it.
#[derive(Debug, Clone, Default)]
pub struct CallOrigin {
    /// Who made the calling request.
    pub caller: IdentityCtx,
    /// How many service calls deep the calling request is.
    pub depth: u8,
}

/// The depth of a request made by a service call, as an extension of the
/// request the callee's dispatch receives.
#[derive(Debug, Clone, Copy)]
pub struct CallDepth(pub u8);

/// Runs a request through a plugin by name; the server implements it.
pub trait ServiceCaller: Send + Sync {
    /// The callee's response, or why there is none (no such plugin, not
    /// loaded, no HTTP handler).
    fn call(
        &self,
        plugin: &str,
        request: http::Request<axum::body::Body>,
        caller: IdentityCtx,
    ) -> BoxFuture<'static, Result<http::Response<axum::body::Body>, HttpError>>;
}

/// The dispatcher, once the server has bound it. (The dispatcher holds
/// the registry, which holds the capabilities, weakly: no cycle.)
#[derive(Default)]
pub struct Binding(OnceLock<Arc<dyn ServiceCaller>>);

impl Binding {
    /// Binds the dispatcher (once; later calls are ignored).
    pub fn bind(&self, dispatcher: Arc<dyn ServiceCaller>) {
        let _ = self.0.set(dispatcher);
    }

    fn get(&self) -> Option<Arc<dyn ServiceCaller>> {
        self.0.get().cloned()
    }
}

/// One service call of `plugin` (the caller) to `service`, under its
/// grants. Errors are `wasi:http` error codes, which the guest sees as its
/// outgoing request's failure; a callee that fails answers with its status
/// and JSON error, as it would a client.
pub fn call(
    binding: &Arc<Binding>,
    grants: &Grants,
    metrics: &Arc<Metrics>,
    plugin: &Arc<str>,
    service: &str,
    origin: &CallOrigin,
    mut request: http::Request<WasiBody>,
) -> BoxFuture<'static, Result<http::Response<WasiBody>, HttpError>> {
    let count = {
        let (metrics, plugin) = (metrics.clone(), plugin.clone());
        let service: Arc<str> = service.into();
        move |outcome| metrics.services.count(&plugin, &service, outcome)
    };
    if grants.check(Kind::Service, service).is_err() {
        tracing::warn!(%plugin, service, "service call refused: not granted");
        count("denied");
        return Box::pin(async { Err(HttpError::HttpRequestDenied) });
    }
    if origin.depth >= MAX_DEPTH {
        tracing::warn!(%plugin, service, depth = origin.depth, "service call refused: too deep");
        count("too_deep");
        return Box::pin(async { Err(HttpError::LoopDetected) });
    }
    let Some(dispatcher) = binding.get() else {
        count("failed");
        return Box::pin(async {
            Err(HttpError::InternalError(Some(
                "service calls are not available here".into(),
            )))
        });
    };
    let caller = match grants.identity_to.contains(service) {
        true => origin.caller.clone(),
        false => IdentityCtx::default(),
    };
    request.extensions_mut().insert(CallDepth(origin.depth + 1));
    let pending = dispatcher.call(service, request.map(axum::body::Body::new), caller);
    Box::pin(async move {
        let response = pending.await.inspect_err(|_| count("failed"))?;
        count("called");
        Ok(response.map(|body| {
            body.map_err(|e| HttpError::InternalError(Some(e.to_string())))
                .boxed_unsync()
        }))
    })
}

crate::metrics::series! {
    /// Service calls' series.
    pub struct ServiceMetrics {
        /// Service calls, by caller, callee and outcome: `called` (the
        /// callee answered, whatever its status), `denied` (not granted),
        /// `too_deep` (the chain reached its depth limit), `failed` (no
        /// such plugin, or not ready).
        calls: Family<ServiceLabels, Counter> = Family::default(),
            "service_calls",
            "Calls of a plugin to another in-process, by caller, service and outcome (called, denied, too_deep, failed)";
    }
}

impl ServiceMetrics {
    /// Counts a service call of `plugin` to `service`.
    pub fn count(&self, plugin: &Arc<str>, service: &Arc<str>, outcome: &'static str) {
        let labels = ServiceLabels {
            plugin: plugin.clone(),
            service: service.clone(),
            outcome,
        };
        self.calls.get_or_create(&labels).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::service_name;

    #[test]
    fn service_addresses() {
        assert_eq!(
            service_name("transpiler.spike.internal"),
            Some("transpiler")
        );
        assert_eq!(service_name("my-cms.spike.internal"), Some("my-cms"));
        for not in [
            "spike.internal",
            ".spike.internal",
            "a.b.spike.internal",
            "transpilerspike.internal",
            "transpiler.spike.internal.example.com",
            "example.com",
        ] {
            assert_eq!(service_name(not), None, "{not}");
        }
    }
}
