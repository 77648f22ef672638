//! The server's side of service calls (`caps::services`): a bound plugin's
//! request runs through `runtime::dispatch` as a client's would, with the
//! callee's limits, but not through its routes' gate (authentication and
//! rate limits are for clients); a callee that fails answers with the
//! status and JSON error a client would get.

use std::sync::{Arc, Weak};

use futures::future::BoxFuture;
use wasmtime_wasi_http::Error as HttpError;

use super::app::{dispatch_failed, not_ready};
use crate::caps::identity::IdentityCtx;
use crate::caps::services::ServiceCaller;
use crate::runtime::PluginRegistry;
use crate::runtime::dispatch::Dispatcher;

/// Dispatches service calls to the plugins of one registry.
pub struct ServiceDispatcher {
    /// Weak: the registry holds the capabilities, which hold this
    /// (`caps::services::Binding`).
    registry: Weak<PluginRegistry>,
    dispatcher: Dispatcher,
}

impl ServiceDispatcher {
    pub fn for_registry(
        registry: &Arc<PluginRegistry>,
        dispatcher: Dispatcher,
    ) -> Arc<dyn ServiceCaller> {
        Arc::new(Self {
            registry: Arc::downgrade(registry),
            dispatcher,
        })
    }
}

impl ServiceCaller for ServiceDispatcher {
    fn call(
        &self,
        plugin: &str,
        request: http::Request<axum::body::Body>,
        caller: IdentityCtx,
    ) -> BoxFuture<'static, Result<http::Response<axum::body::Body>, HttpError>> {
        let registry = self.registry.upgrade();
        let slot = registry.as_ref().and_then(|r| r.slot(plugin));
        let dispatcher = self.dispatcher.clone();
        Box::pin(async move {
            let (Some(_registry), Some(slot)) = (registry, slot) else {
                return Err(HttpError::DestinationNotFound);
            };
            let Some(plugin) = slot.active() else {
                return Ok(not_ready(&slot));
            };
            match dispatcher.dispatch(&slot, plugin, caller, request).await {
                Ok(response) => Ok(response),
                Err(e) => Ok(dispatch_failed(&slot, e)),
            }
        })
    }
}
