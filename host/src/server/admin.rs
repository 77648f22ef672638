//! The operator API under `/_spike/`: list plugins, upload a new version,
//! roll back, put a manifest, read a plugin's guest logs, look into a KV
//! namespace. Every call needs `Authorization: Bearer <admin token>`; with no
//! token configured the API is disabled.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, Request, State};
use axum::http::HeaderMap;
use futures::StreamExt;
use http::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::AppState;
use super::errors::ApiError;
use super::gate::{self, PeerAddr};
use super::json::JsonLine;
use crate::runtime::PluginSlot;
use crate::runtime::registry::{NewVersion, StagedFile};
use crate::runtime::request_body::declared_length;
use crate::runtime::{LoadError, LoadedPlugin};
use crate::storage::VersionSource;

/// The operator's token, checked before anything else (see `operator`).
fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<PeerAddr>,
) -> Result<(), ApiError> {
    let client = gate::client_ip(peer, headers, &state.client_addresses);
    state.operator.check(headers, client)
}

/// The connection's peer, as the listener noted it.
type Peer = Option<Extension<PeerAddr>>;

fn version_json(v: &LoadedPlugin) -> Value {
    json!({
        "sha256": v.sha256,
        "source": v.source,
        "loaded_at_ms": v.loaded_at_ms,
        "load_ms": v.load_time.as_secs_f64() * 1e3,
        "compile_cache": v.cache,
    })
}

async fn plugin_json(state: &AppState, slot: &PluginSlot) -> Value {
    let active = slot.active();
    let error = slot.last_error();
    let state_name = match (&active, &error) {
        (None, _) if slot.is_loading() => "loading",
        // Rooms only: served by the host, no version to load.
        (None, None) if slot.manifest.component.is_none() => "ready",
        (Some(_), None) => "ready",
        // Serving the old version; the newest one was refused.
        (Some(_), Some(_)) => "degraded",
        (None, _) => "failed",
    };
    let history = state
        .registry
        .history(&slot.manifest.name)
        .await
        .unwrap_or_default();
    let routes: Vec<Value> = slot
        .manifest
        .routes
        .iter()
        .map(|r| json!({ "prefix": r.prefix, "methods": r.methods }))
        .collect();
    let rooms: Vec<Value> = (slot.manifest.rooms.iter())
        .map(|r| json!({ "path": room_path(r), "protocol": r.protocol.name() }))
        .collect();
    // An uploaded version runs from the data folder: the manifest's file
    // may not exist, and is not what serves until it is written.
    let component = slot.manifest.component.as_ref();
    let component_exists = component.map(|c| c.is_file());
    json!({
        "name": slot.manifest.name,
        "state": state_name,
        "manifest": {
            "path": slot.manifest.path.display().to_string(),
            "sha256": slot.manifest.sha256,
            "since_ms": slot.since_ms,
        },
        "component": slot.manifest.component.as_ref().map(|c| c.display().to_string()),
        "version": active.as_deref().map(version_json),
        "error": error,
        "in_flight": slot.in_flight(),
        "max_concurrent": slot.max_concurrent,
        "routes": routes,
        "rooms": rooms,
        "component_exists": component_exists,
        "history": history.versions,
    })
}

/// Where a room route's sockets connect, as a client writes it.
fn room_path(route: &crate::runtime::manifest::RoomRoute) -> String {
    route.protocol.client_path(&route.prefix)
}

/// `GET /_spike/plugins`
/// `GET /_spike/certs`: the certificates served over HTTPS, and how their
/// renewal fares (`spike certs list`).
pub async fn certs(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<JsonLine<Value>, ApiError> {
    authorize(&state, &headers, peer.map(|Extension(p)| p))?;
    Ok(JsonLine(match &state.admin.tls {
        Some(tls) => tls.list(),
        None => serde_json::json!({ "certificates": [], "acme": null }),
    }))
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<JsonLine<Value>, ApiError> {
    authorize(&state, &headers, peer.map(|Extension(p)| p))?;
    let nodes = match &state.admin.cluster {
        Some(cluster) => Some(cluster.nodes().await.map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
                format!("cannot read the cluster's nodes: {e}"),
            )
        })?),
        None => None,
    };
    let mut plugins = Vec::new();
    for slot in state.registry.slots() {
        let mut plugin = plugin_json(&state, &slot).await;
        if let Some(nodes) = &nodes {
            // Each node's active version of this plugin, as it last said.
            let versions: serde_json::Map<String, Value> = nodes
                .iter()
                .filter_map(|n| Some((n.node.clone(), json!(n.plugins.get(&slot.manifest.name)?))))
                .collect();
            plugin["nodes"] = Value::Object(versions);
        }
        plugins.push(plugin);
    }
    let refused: Vec<Value> = state
        .registry
        .refused_manifests()
        .into_iter()
        .map(|(path, reason)| json!({ "path": path.display().to_string(), "reason": reason }))
        .collect();
    let mut answer = json!({ "plugins": plugins, "refused_manifests": refused });
    if let (Some(cluster), Some(nodes)) = (&state.admin.cluster, nodes) {
        answer["node"] = json!(cluster.node());
        answer["nodes"] = json!(nodes);
    }
    Ok(JsonLine(answer))
}

fn load_error(e: LoadError) -> ApiError {
    match e {
        LoadError::Compile(_)
        | LoadError::World(_)
        | LoadError::NoHttpHandler
        | LoadError::NoRoomHandler => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "component_refused",
            e.to_string(),
        ),
        LoadError::NoSuchPlugin(_) => ApiError::not_found(e.to_string()),
        LoadError::NoComponent(_) => {
            ApiError::new(StatusCode::CONFLICT, "no_component", e.to_string())
        }
        LoadError::NoPreviousVersion => {
            ApiError::new(StatusCode::CONFLICT, "no_previous_version", e.to_string())
        }
        LoadError::NoSuchVersion(crate::runtime::versions::FindError::None(_)) => {
            ApiError::new(StatusCode::NOT_FOUND, "no_such_version", e.to_string())
        }
        LoadError::NoSuchVersion(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_version", e.to_string())
        }
        LoadError::Manifest(_) | LoadError::Conflict(_) => {
            ApiError::new(StatusCode::CONFLICT, "manifest_refused", e.to_string())
        }
        LoadError::Read { .. } | LoadError::Storage(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        }
    }
}

/// `PUT /_spike/plugins/{name}` with the component as the body.
///
/// The token is checked before a byte of the body is read, so anonymous
/// uploads cost nothing (hyper closes the connection on the unread body).
/// An authorised upload is streamed into a staging file under the size
/// limit, hashed on the way, and only read back to compile.
pub async fn upload(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    request: Request,
) -> Result<JsonLine<Value>, ApiError> {
    let peer = request.extensions().get::<PeerAddr>().copied();
    authorize(&state, request.headers(), peer)?;
    let limit = state.admin.max_component_bytes;
    if declared_length(request.headers()).is_some_and(|n| n > limit) {
        return Err(component_too_large(limit));
    }
    if state.registry.slot(&name).is_none() {
        return Err(load_error(LoadError::NoSuchPlugin(name)));
    }
    let staged = StagedFile {
        path: state.registry.staging_path(),
        sha256: String::new(),
    };
    let (staged, size) = stage_body(&state, request.into_body(), staged).await?;
    if size == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty_body",
            "send the component (.wasm) as the body",
        ));
    }
    let loaded = state
        .registry
        .install(&name, NewVersion::Staged(staged), VersionSource::Upload)
        .await
        .map_err(load_error)?;
    Ok(serving(&name, &loaded))
}

/// The answer to a swap: the plugin and the version it now serves.
fn serving(name: &str, loaded: &LoadedPlugin) -> JsonLine<Value> {
    JsonLine(json!({ "name": name, "version": version_json(loaded) }))
}

fn component_too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "component_too_large",
        format!("a component may be at most {limit} bytes"),
    )
}

/// Streams `body` into the staging file, up to the size limit and with the
/// body timeout between chunks; returns the file (hash filled in) and its
/// size. On any failure the file is removed (`StagedFile` drops).
async fn stage_body(
    state: &AppState,
    body: axum::body::Body,
    mut staged: StagedFile,
) -> Result<(StagedFile, u64), ApiError> {
    let internal = |e: std::io::Error| {
        tracing::error!("staging an upload: {e}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "could not store the upload",
        )
    };
    let limit = state.admin.max_component_bytes;
    let mut file = tokio::fs::File::create(&staged.path)
        .await
        .map_err(internal)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut chunks = body.into_data_stream();
    loop {
        let chunk = match tokio::time::timeout(state.clients.body_timeout, chunks.next()).await {
            Err(_) => return Err(ApiError::body_timeout(state.clients.body_timeout)),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("reading the body: {e}"),
                ));
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        size += chunk.len() as u64;
        if size > limit {
            return Err(component_too_large(limit));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(internal)?;
    }
    // Durable before it can become a kept version.
    file.sync_all().await.map_err(internal)?;
    staged.sha256 = hex::encode(hasher.finalize());
    Ok((staged, size))
}

/// `GET /_spike/metrics`: every series, in the Prometheus text format.
pub async fn metrics(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    authorize(&state, &headers, peer.map(|Extension(p)| p))?;
    Ok(super::metrics_response(&state.metrics))
}

/// `POST /_spike/plugins/{name}/rollback`
pub async fn rollback(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<JsonLine<Value>, ApiError> {
    authorize(&state, &headers, peer.map(|Extension(p)| p))?;
    let loaded = state.registry.rollback(&name).await.map_err(load_error)?;
    Ok(serving(&name, &loaded))
}

/// `POST /_spike/plugins/{name}/versions/{version}/activate`: serves the
/// kept version whose hash starts with `version` (at least four hex
/// digits), back or forward.
pub async fn activate(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<JsonLine<Value>, ApiError> {
    authorize(&state, &headers, peer.map(|Extension(p)| p))?;
    let loaded = (state.registry.activate_kept(&name, &version).await).map_err(load_error)?;
    Ok(serving(&name, &loaded))
}

/// `DELETE /_spike/plugins/{name}`: the plugin stops serving (requests in
/// flight finish) and its manifest file is removed, on every node of a
/// cluster; its kept versions and its data stay.
pub async fn remove(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<JsonLine<Value>, ApiError> {
    authorize(&state, &headers, peer.map(|Extension(p)| p))?;
    let internal = |e: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e);
    match state.registry.remove_plugin(&name).await {
        Ok(true) => {}
        Ok(false) => return Err(load_error(LoadError::NoSuchPlugin(name))),
        Err(e) => return Err(internal(e.to_string())),
    }
    if let Some(cluster) = &state.admin.cluster {
        cluster.unshare_manifest(&name).await.map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
                format!("removed from this node, not from the others: {e}"),
            )
        })?;
    }
    Ok(JsonLine(json!({ "name": name, "change": "removed" })))
}

/// The largest manifest `put_manifest` takes.
const MAX_MANIFEST_BYTES: usize = 256 << 10;

/// `PUT /_spike/plugins/{name}/manifest` with the manifest (TOML) as the
/// body: adds or changes plugin `name` as an edit of its manifest file
/// would, and on a cluster shares it with every node. A manifest that does
/// not parse is a 400 with its line; one that cannot serve is a 409, and
/// what served before goes on.
pub async fn put_manifest(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    request: Request,
) -> Result<JsonLine<Value>, ApiError> {
    use crate::runtime::live::{ManifestChange, PutManifestError};
    let peer = request.extensions().get::<PeerAddr>().copied();
    authorize(&state, request.headers(), peer)?;
    let bad = |code, message: String| ApiError::new(StatusCode::BAD_REQUEST, code, message);
    crate::runtime::manifest::check_name(&name)
        .map_err(|e| bad("bad_name", format!("plugin name: {e}")))?;
    let body = axum::body::to_bytes(request.into_body(), MAX_MANIFEST_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "manifest_too_large",
                format!("a manifest is at most {MAX_MANIFEST_BYTES} bytes"),
            )
        })?;
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| bad("bad_manifest", "a manifest is UTF-8 text (TOML)".into()))?;
    let change = match state.registry.put_manifest(&name, &text).await {
        Ok(change) => change,
        // Its line, not this server's path: the sender knows which file
        // it pushed (`spike plugins push` names it).
        Err(PutManifestError::Invalid(e)) => {
            let message = match e.line {
                Some(line) => format!("line {line}: {}", e.message),
                None => e.message,
            };
            return Err(bad("bad_manifest", message));
        }
        Err(PutManifestError::Refused(reason)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "manifest_refused",
                reason,
            ));
        }
        Err(e @ PutManifestError::Io(_)) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                e.to_string(),
            ));
        }
    };
    if let Some(cluster) = &state.admin.cluster {
        cluster.share_manifest(&name, &text).await.map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
                format!("in force on this node, not shared with the others: {e}"),
            )
        })?;
    }
    let change = match change {
        ManifestChange::Added(_) => "added",
        ManifestChange::Updated(_) => "updated",
        _ => "unchanged",
    };
    let plugin = match state.registry.slot(&name) {
        Some(slot) => plugin_json(&state, &slot).await,
        None => Value::Null,
    };
    Ok(JsonLine(
        json!({ "name": name, "change": change, "plugin": plugin }),
    ))
}

/// The most of a value `kv_list` shows.
const KV_VALUE_PREVIEW: usize = 4096;

/// `GET /_spike/kv/{namespace}?prefix=&cursor=&limit=`: what a plugin keeps
/// in a namespace (the AI plugin's breakers under `breaker:`, a cache, a
/// counter), for operators: keys in order with metadata, expiry and the
/// value's first 4 KiB as text. Read only.
pub async fn kv_list(
    State(state): State<Arc<AppState>>,
    Path(namespace): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<JsonLine<Value>, ApiError> {
    authorize(&state, &headers, peer.map(|Extension(p)| p))?;
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(n @ 1..=1000)) => n,
        Some(_) => {
            let message = "limit must be a number from 1 to 1000";
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                message,
            ));
        }
    };
    let prefix = query.get("prefix").map_or("", String::as_str);
    let storage = |e: crate::storage::StorageError| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage", e.to_string())
    };
    let page = state
        .admin
        .kv
        .list(
            &namespace,
            prefix,
            query.get("cursor").map(String::as_str),
            limit,
        )
        .await
        .map_err(storage)?;
    let mut keys = Vec::with_capacity(page.items.len());
    for key in page.items {
        let value = state
            .admin
            .kv
            .get(&namespace, &key.name)
            .await
            .map_err(storage)?;
        let (text, bytes) = match &value {
            Some(entry) => {
                let shown = &entry.value[..entry.value.len().min(KV_VALUE_PREVIEW)];
                (std::str::from_utf8(shown).ok(), entry.value.len())
            }
            None => (None, 0),
        };
        keys.push(json!({
            "name": key.name,
            "metadata": key.metadata,
            "expires_at_ms": key.expires_at_ms,
            "value": text,
            "value_bytes": bytes,
        }));
    }
    Ok(JsonLine(
        json!({"namespace": namespace, "keys": keys, "cursor": page.cursor}),
    ))
}

/// `GET /_spike/plugins/{name}/logs[?follow=true]`: what the plugin's
/// guests printed lately (the last `guest_log::KEPT` lines), one JSON object
/// a line (`at_ms`, `stream`, `line`); with `follow`, then each new line as
/// it comes, until the client goes or the server stops (a follower that
/// falls too far behind gets `{"missed": n}` where lines were lost).
pub async fn logs(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    authorize(&state, &headers, peer.map(|Extension(p)| p))?;
    let slot = (state.registry.slot(&name))
        .ok_or_else(|| load_error(LoadError::NoSuchPlugin(name.clone())))?;
    let follow = query.get("follow").is_some_and(|v| v == "true" || v == "1");
    let (kept, live) = slot.context.caps.log_feed.read();
    let line = |value: Value| Ok::<_, std::convert::Infallible>(format!("{value}\n"));
    let kept = futures::stream::iter(kept).map(move |l| line(json!(*l)));
    // Until the client goes, or the server stops.
    let stopping = state.stopping.clone();
    let live = futures::stream::unfold((live, stopping), |(mut live, mut stopping)| async move {
        use tokio::sync::broadcast::error::RecvError;
        let next = tokio::select! {
            next = live.recv() => next,
            _ = stopping.wait_for(|stop| *stop) => return None,
        };
        let value = match next {
            Ok(l) => json!(*l),
            Err(RecvError::Lagged(n)) => json!({ "missed": n }),
            Err(RecvError::Closed) => return None,
        };
        Some((value, (live, stopping)))
    })
    .map(line);
    let body = match follow {
        true => axum::body::Body::from_stream(kept.chain(live)),
        false => axum::body::Body::from_stream(kept),
    };
    Ok(axum::response::Response::builder()
        .header(http::header::CONTENT_TYPE, "application/x-ndjson")
        .body(body)
        .expect("a valid response"))
}
