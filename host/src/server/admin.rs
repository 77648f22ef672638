//! The operator API under `/_spike/`: list plugins, upload a new version,
//! roll back. Every call needs `Authorization: Bearer <admin token>`; with no
//! token configured the API is disabled.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use http::StatusCode;
use serde_json::{Value, json};

use super::AppState;
use super::errors::ApiError;
use crate::runtime::registry::{LoadError, LoadedPlugin, PluginSlot, VersionSource};

/// Largest component an upload may carry.
pub const MAX_COMPONENT_BYTES: usize = 256 << 20;

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = state.admin_token.as_deref() else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "the admin API is disabled: start spike with --admin-token or SPIKE_ADMIN_TOKEN",
        ));
    };
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong operator token (Authorization: Bearer <token>)",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn version_json(v: &LoadedPlugin) -> Value {
    json!({
        "sha256": v.sha256,
        "source": v.source,
        "loaded_at_ms": v.loaded_at_ms,
        "load_ms": v.load_time.as_secs_f64() * 1e3,
        "compile_cache": v.cache,
    })
}

fn plugin_json(state: &AppState, slot: &PluginSlot) -> Value {
    let active = slot.active();
    let error = slot.last_error();
    let state_name = match (&active, &error) {
        (Some(_), None) => "ready",
        // Serving the old version; the newest one was refused.
        (Some(_), Some(_)) => "degraded",
        (None, _) => "failed",
    };
    let history = state
        .registry
        .history(&slot.manifest.name)
        .unwrap_or_default();
    let routes: Vec<Value> = slot
        .manifest
        .routes
        .iter()
        .map(|r| json!({ "prefix": r.prefix, "methods": r.methods }))
        .collect();
    json!({
        "name": slot.manifest.name,
        "state": state_name,
        "component": slot.manifest.component.display().to_string(),
        "version": active.as_deref().map(version_json),
        "error": error,
        "routes": routes,
        "history": history.versions,
    })
}

/// `GET /_spike/plugins`
pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let plugins: Vec<Value> = state
        .registry
        .slots()
        .map(|s| plugin_json(&state, s))
        .collect();
    Ok(Json(json!({ "plugins": plugins })))
}

fn load_error(e: LoadError) -> ApiError {
    match e {
        LoadError::Compile(_) | LoadError::World(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "component_refused",
            e.to_string(),
        ),
        LoadError::NoSuchPlugin(_) => ApiError::not_found(e.to_string()),
        LoadError::NoPreviousVersion => {
            ApiError::new(StatusCode::CONFLICT, "no_previous_version", e.to_string())
        }
        LoadError::Read { .. } | LoadError::Storage(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        }
    }
}

/// `PUT /_spike/plugins/{name}` with the component as the body.
pub async fn upload(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let body = body.map_err(|e| ApiError::new(e.status(), "bad_body", e.body_text()))?;
    if body.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty_body",
            "send the component (.wasm) as the body",
        ));
    }
    let loaded = state
        .registry
        .install(&name, body.to_vec(), VersionSource::Upload)
        .await
        .map_err(load_error)?;
    Ok(Json(
        json!({ "name": name, "version": version_json(&loaded) }),
    ))
}

/// `POST /_spike/plugins/{name}/rollback`
pub async fn rollback(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let loaded = state.registry.rollback(&name).await.map_err(load_error)?;
    Ok(Json(
        json!({ "name": name, "version": version_json(&loaded) }),
    ))
}
