//! Configuration over HTTP: reload (as SIGHUP does), the running configuration and its version,
//! every version this server has run, and the diff between two.

// utoipa's `#[utoipa::path]` expands `Query<T>` parameters with a path the lint flags.
#![allow(unused_qualifications)]

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::dns::Snapshot;
use crate::store::ConfigVersion;

use super::ControlState;
use super::auth::Need;
use super::error::{ApiError, invalid_configuration};
use super::write::{admit, audit};

/// The running configuration.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConfigView {
    /// Hex SHA-256 of the text and the zone files it names.
    version: String,
    generation: u64,
    text: String,
}

/// A known configuration version.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct VersionView {
    version: String,
    first_seen_unix_ms: u64,
    running: bool,
}

/// Query parameters of `/v1/config/diff`.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct DiffParams {
    /// The older version.
    from: String,
    /// The newer version; default the running one.
    to: Option<String>,
}

/// Reload configuration, zones and geo database (as SIGHUP does).
#[utoipa::path(post, path = "/v1/reload", security(("bearer" = [])),
    responses((status = 200, body = ConfigView), (status = 422, body = super::error::ErrorBody,
        description = "the configuration is invalid; the previous one keeps serving")))]
pub(crate) async fn reload(
    State(state): State<ControlState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let snapshot = state.shared.load();
    let caller = admit(&state, &snapshot, &headers, Need::Operator)?;
    let entry = audit(
        &caller,
        "reload",
        "configuration",
        serde_json::Value::Null,
        state.clock.now(),
    );
    match state.handle.reload_as(Some(entry)).await {
        Ok(_) => {
            let snapshot = state.shared.load();
            Ok(Json(config_view(&snapshot)).into_response())
        }
        Err(error) => Ok(invalid_configuration(&error.problems)),
    }
}

fn config_view(snapshot: &Snapshot) -> ConfigView {
    ConfigView {
        version: snapshot.loaded.config_version.clone(),
        generation: snapshot.generation,
        text: snapshot.loaded.config_text.to_string(),
    }
}

/// The running configuration and its version.
#[utoipa::path(get, path = "/v1/config", responses((status = 200, body = ConfigView)))]
pub(crate) async fn get_config(State(state): State<ControlState>) -> Json<ConfigView> {
    Json(config_view(&state.shared.load()))
}

/// Every configuration version this server has run.
#[utoipa::path(get, path = "/v1/config/versions", responses((status = 200, body = [VersionView])))]
pub(crate) async fn config_versions(
    State(state): State<ControlState>,
) -> Result<Json<Vec<VersionView>>, ApiError> {
    let running = state.shared.load().loaded.config_version.clone();
    let store = state.store.clone();
    let versions = tokio::task::spawn_blocking(move || store.config_versions())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(
        versions
            .into_iter()
            .map(|v| VersionView {
                running: v.hash == running,
                version: v.hash,
                first_seen_unix_ms: v.first_seen_unix_ms,
            })
            .collect(),
    ))
}

/// A unified diff between two configuration versions: the configuration, then each zone file.
#[utoipa::path(get, path = "/v1/config/diff", params(DiffParams),
    responses((status = 200, body = String, content_type = "text/plain"), (status = 404, body = super::error::ErrorBody)))]
pub(crate) async fn config_diff(
    State(state): State<ControlState>,
    Query(params): Query<DiffParams>,
) -> Result<Response, ApiError> {
    let to_version = params
        .to
        .unwrap_or_else(|| state.shared.load().loaded.config_version.clone());
    let store = state.store.clone();
    let (from_hash, to_hash) = (params.from.clone(), to_version.clone());
    let (from, to) = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::store::StoreError>((
            store.config_version(&from_hash)?,
            store.config_version(&to_hash)?,
        ))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let from = from.ok_or_else(|| {
        ApiError::not_found(format!("no configuration version {:?}", params.from))
    })?;
    let to =
        to.ok_or_else(|| ApiError::not_found(format!("no configuration version {to_version:?}")))?;
    let diff = diff_versions(&from, &to);
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], diff).into_response())
}

/// The unified diff between two versions: the configuration, then each zone file that changed,
/// each with a `---`/`+++` header naming the file and the version. A file only one version has
/// is compared with nothing.
fn diff_versions(from: &ConfigVersion, to: &ConfigVersion) -> String {
    let file_text = |version: &ConfigVersion, name: &str| -> String {
        version
            .files
            .iter()
            .find(|file| file.name == name)
            .map(|file| file.text.clone())
            .unwrap_or_default()
    };
    let mut names: Vec<&str> = from.files.iter().map(|file| file.name.as_str()).collect();
    for file in &to.files {
        if !names.contains(&file.name.as_str()) {
            names.push(&file.name);
        }
    }
    let mut res = unified(
        &from.text,
        &to.text,
        &format!("configuration {}", from.hash),
        &format!("configuration {}", to.hash),
    );
    for name in names {
        res.push_str(&unified(
            &file_text(from, name),
            &file_text(to, name),
            &format!("{name} {}", from.hash),
            &format!("{name} {}", to.hash),
        ));
    }
    res
}

/// A unified diff of two texts; empty when they are equal.
fn unified(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .header(old_name, new_name)
        .to_string()
}
