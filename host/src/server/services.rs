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
use crate::caps::services::Dispatcher;
use crate::runtime::PluginRegistry;
use crate::runtime::dispatch::{BodyTimeouts, dispatch};

/// Dispatches service calls to the plugins of one registry.
pub struct ServiceDispatcher {
    /// Weak: the registry holds the capabilities, which hold this
    /// (`caps::services::Binding`).
    registry: Weak<PluginRegistry>,
    timeouts: BodyTimeouts,
}

impl ServiceDispatcher {
    pub fn for_registry(
        registry: &Arc<PluginRegistry>,
        timeouts: BodyTimeouts,
    ) -> Arc<dyn Dispatcher> {
        Arc::new(Self {
            registry: Arc::downgrade(registry),
            timeouts,
        })
    }
}

impl Dispatcher for ServiceDispatcher {
    fn call(
        &self,
        plugin: &str,
        request: http::Request<axum::body::Body>,
        caller: IdentityCtx,
    ) -> BoxFuture<'static, Result<http::Response<axum::body::Body>, HttpError>> {
        let registry = self.registry.upgrade();
        let slot = registry.as_ref().and_then(|r| r.slot(plugin));
        let timeouts = self.timeouts;
        Box::pin(async move {
            let (Some(registry), Some(slot)) = (registry, slot) else {
                return Err(HttpError::DestinationNotFound);
            };
            let Some(plugin) = slot.active() else {
                return Ok(not_ready(&slot));
            };
            let (engine, watchdog) = (registry.engine(), registry.watchdog());
            match dispatch(&slot, plugin, engine, watchdog, timeouts, caller, request).await {
                Ok(response) => Ok(response),
                Err(e) => Ok(dispatch_failed(&slot, e)),
            }
        })
    }
}
