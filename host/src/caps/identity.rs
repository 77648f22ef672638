//! The `spike:host/identity` capability: the caller an authenticator plugin
//! verified for this request (`runtime::auth`), or none. It needs no grant:
//! a plugin learns only who is calling it.

use std::sync::Arc;

use super::View;
use crate::bindings::spike::host::identity as wit;

pub use wit::Caller;

/// The verified caller of one request, if any.
pub type IdentityCtx = Option<Arc<Caller>>;

/// The view that implements the identity `Host` trait.
pub type IdentityView<'a> = View<'a, IdentityCtx>;

impl wit::Host for IdentityView<'_> {
    async fn current(&mut self) -> wasmtime::Result<Option<Caller>> {
        Ok(self.ctx.as_deref().cloned())
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
