//! The `spike:host/identity` capability: the caller an authenticator plugin
//! verified for this request (`runtime::auth`), or none, and the client's
//! address. It needs no grant: a plugin learns only who is calling it.

use std::net::IpAddr;
use std::sync::Arc;

use super::View;
use crate::bindings::spike::host::identity as wit;

pub use wit::Caller;

/// The issuer of the caller of an `auth = "operator"` route (the server's
/// operator, subject `operator`). No authenticator's caller may have it:
/// the auth hook refuses one that does, so a plugin can trust it.
pub const OPERATOR_ISSUER: &str = "spike";

/// The caller of an `auth = "operator"` route.
pub fn operator() -> Caller {
    Caller {
        subject: "operator".into(),
        session_id: None,
        issuer: OPERATOR_ISSUER.into(),
        claims: "{}".into(),
        expires_at_ms: None,
    }
}

/// Who made one request.
#[derive(Debug, Clone, Default)]
pub struct IdentityCtx {
    /// The verified caller, if any.
    pub caller: Option<Arc<Caller>>,
    /// The client's address (`server::gate` decides it), for requests a
    /// client made.
    pub client: Option<IpAddr>,
}

impl IdentityCtx {
    /// A call no client made, on behalf of `caller` if any.
    pub fn on_behalf_of(caller: Option<Arc<Caller>>) -> Self {
        Self {
            caller,
            client: None,
        }
    }
}

/// The view that implements the identity `Host` trait.
pub type IdentityView<'a> = View<'a, IdentityCtx>;

impl wit::Host for IdentityView<'_> {
    async fn current(&mut self) -> wasmtime::Result<Option<Caller>> {
        Ok(self.ctx.caller.as_deref().cloned())
    }

    async fn client_address(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(self.ctx.client.map(|ip| ip.to_string()))
    }
}

struct HasIdentity;

impl wasmtime::component::HasData for HasIdentity {
    type Data<'a> = IdentityView<'a>;
}

/// Adds `spike:host/identity` to the linker.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    view: fn(&mut T) -> IdentityView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasIdentity>(linker, view)
}
