//! Everything a plugin may import, linked in one place: all of WASI 0.2 (so
//! components from other toolchains load; sockets and files stay closed by
//! each request's `WasiCtx`), `wasi:http`, each of spike's capabilities,
//! one line per capability, and the WASI proposals on them
//! (`wit/standards.wit`: keyvalue and config here, logging with `otel`,
//! blobstore with `blob`).

use wasmtime::Engine;
use wasmtime::component::Linker;

use super::state::RequestState;
use crate::caps;

/// A linker with every import of the plugin world.
pub fn new(engine: &Engine) -> wasmtime::Result<Linker<RequestState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    caps::kv::add_to_linker(&mut linker, RequestState::kv_view)?;
    caps::wasi_keyvalue::add_to_linker(&mut linker, RequestState::kv_view)?;
    caps::wasi_config::add_to_linker(&mut linker, RequestState::config_view)?;
    caps::blob::add_to_linker(&mut linker, RequestState::blob_view)?;
    caps::secrets::add_to_linker(&mut linker, RequestState::secrets_view)?;
    caps::identity::add_to_linker(&mut linker, RequestState::identity_view)?;
    caps::rate_limit::add_to_linker(&mut linker, RequestState::rate_limit_view)?;
    caps::rooms::add_to_linker(&mut linker, RequestState::rooms_view)?;
    caps::render::add_to_linker(&mut linker, RequestState::render_view)?;
    caps::sql::add_to_linker(&mut linker, RequestState::sql_view)?;
    caps::otel::add_to_linker(&mut linker, RequestState::otel_view)?;
    Ok(linker)
}
