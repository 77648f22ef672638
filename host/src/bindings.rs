//! The one `bindgen!` of the host: Rust types and `Host` traits for the
//! `spike:host` WIT package in `wit/`. The `wasi:*` packages map onto
//! wasmtime's own bindings, so a stream or HTTP type means the same resource
//! everywhere. Capability modules (`caps::*`) implement the traits.
//!
//! The world is `host`: the plugin world, the WASI standards spike links
//! (`wit/standards.wit`), and every export a plugin may have, so that the
//! host has the bindings of each; a component provides whichever exports it
//! does (`runtime::loader::Exports`). Where two versions of a standard are
//! linked, their modules carry the version (`wasi::keyvalue0_2_0_draft2`).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "spike:host/host",
    imports: {
        "spike:host/kv": async | trappable,
        "spike:host/blob": async | trappable,
        "spike:host/secrets": async | trappable,
        "spike:host/identity": async | trappable,
        "spike:host/rate-limit": async | trappable,
        "spike:host/rooms": async | trappable,
        "spike:host/render": async | trappable,
        "spike:host/sql": async | trappable,
        "wasi:keyvalue/store": async | trappable,
        "wasi:keyvalue/atomics": async | trappable,
        "wasi:keyvalue/batch": async | trappable,
        "wasi:blobstore/blobstore": async | trappable,
        "wasi:blobstore/container": async | trappable,
        "wasi:blobstore/types": async | trappable,
        default: trappable,
    },
    exports: { default: async },
    trappable_error_type: {
        "spike:host/types.error" => crate::caps::CapError,
    },
    with: {
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:cli": wasmtime_wasi::p2::bindings::cli,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        "wasi:random": wasmtime_wasi::p2::bindings::random,
        "spike:host/kv.namespace": crate::caps::kv::Namespace,
        "spike:host/blob.bucket": crate::caps::blob::Bucket,
        "spike:host/blob.object-writer": crate::caps::blob::ObjectWriter,
        "spike:host/sql.database": crate::caps::sql::Database,
        // Both versions' buckets are spike's namespaces.
        "wasi:keyvalue/store.bucket": crate::caps::kv::Namespace,
        "wasi:keyvalue/atomics.cas": crate::caps::wasi_keyvalue::Cas,
        // A container is spike's bucket.
        "wasi:blobstore/container.container": crate::caps::blob::Bucket,
        "wasi:blobstore/container.stream-object-names": crate::caps::blob::ObjectNames,
        "wasi:blobstore/types.outgoing-value": crate::caps::blob::OutgoingValue,
        "wasi:blobstore/types.incoming-value": crate::caps::blob::IncomingValue,
    },
    require_store_data_send: true,
});
