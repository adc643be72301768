//! The user directory over HTTP: lookups for frontends, pins, bucket moves, bulk import with a
//! change limit, export and restore.
//!
//! Writes that may move many users (imports, restores, bucket moves) are measured first: if they
//! would move more than `directory.change_limit` of the users, they are refused with the report
//! of what they would change unless `confirm=true`; `dry_run=true` returns the same report
//! without changing anything. Imports are streamed and checked row by row; a bad row is reported
//! with its line number and nothing is applied.
//!
//! - this file: single-user handlers (lookup, pin, unpin), the summary, and the checks they share;
//! - `bulk.rs`: bucket moves, imports and restores, measured against the change limit;
//! - `lines.rs`: the streamed line reader and the import rows (NDJSON or CSV);
//! - `export.rs`: the export format, streamed out and read back for a restore.

// utoipa's `#[utoipa::path]` expands `Query<T>` parameters with a path the lint flags.
#![allow(unused_qualifications)]

mod bulk;
mod export;
mod lines;

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::directory::check_user_id;
use crate::dns::Snapshot;
use crate::state::{DirectoryView, reason_label, source_label};
use crate::store::{Change, DirectoryChange, StoredPlacement};

use super::ControlState;
use super::auth::{Budget, Need};
use super::error::ApiError;
use super::extract::Path;
use super::write::{Accepted, admit, admit_to, applied, audit, read_json};

pub(crate) use bulk::{
    __path_import, __path_move_buckets, __path_restore, import, move_buckets, restore,
};
pub(super) use export::read_export;
pub(crate) use export::{__path_export, export};
pub(super) use lines::read_rows;

/// One user's directory entry.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UserView {
    user: String,
    bucket: u32,
    home: String,
    replica: String,
    /// The datacenter to use now.
    serve_from: String,
    /// `home`, `replica` (home ineligible) or `fallback` (neither eligible: home anyway).
    reason: &'static str,
    /// `bucket` or `pin`.
    source: &'static str,
}

/// A home and a replica datacenter.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlacementBody {
    home: String,
    replica: String,
}

/// A directory summary.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DirectorySummary {
    buckets: u32,
    pins: usize,
    /// Buckets whose home is each datacenter.
    homes: HashMap<String, u32>,
}

pub(super) fn view(snapshot: &Snapshot) -> Result<&DirectoryView, ApiError> {
    snapshot
        .directory
        .as_ref()
        .ok_or_else(|| ApiError::not_found("no user directory is configured"))
}

pub(super) fn placement(
    snapshot: &Snapshot,
    home: &str,
    replica: &str,
) -> Result<StoredPlacement, ApiError> {
    for name in [home, replica] {
        if snapshot.loaded.config.datacenter_index(name).is_none() {
            return Err(ApiError::bad_request(format!(
                "unknown datacenter {name:?}"
            )));
        }
    }
    Ok(StoredPlacement {
        home: home.to_owned(),
        replica: replica.to_owned(),
    })
}

pub(super) fn checked_id(id: &str) -> Result<(), ApiError> {
    check_user_id(id).map_err(|error| ApiError::bad_request(format!("user id: {error}")))
}

/// Where a user's data lives and which datacenter to use now.
#[utoipa::path(get, path = "/v1/users/{id}", params(("id" = String, Path, min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$",
        description = "user id, URL-escaped: 1 to 256 bytes of UTF-8 (`MAX_USER_ID_BYTES`) without control characters")),
    security(("bearer" = [])),
    responses((status = 200, description = "where the user's data lives and which datacenter serves it now", body = UserView),
        (status = 404, description = "no user directory is configured", body = super::error::ErrorBody)))]
pub(crate) async fn get_user(
    State(state): State<ControlState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<UserView>, ApiError> {
    let snapshot = state.shared.load();
    admit_to(
        &state,
        &snapshot,
        &headers,
        Need::Directory,
        Budget::Lookups,
    )?;
    checked_id(&id)?;
    let facts = view(&snapshot)?.facts(&id);
    let (source, reason) = facts.metric_labels();
    state.metrics.record_lookup(source, reason);
    Ok(Json(UserView {
        user: id,
        bucket: facts.bucket,
        home: facts.home,
        replica: facts.replica,
        serve_from: facts.serve_from,
        reason: reason_label(facts.reason),
        source: source_label(facts.source),
    }))
}

/// The directory's size and layout.
#[utoipa::path(get, path = "/v1/directory", security(("bearer" = [])),
    responses((status = 200, description = "the directory's size and bucket homes", body = DirectorySummary),
        (status = 404, description = "no user directory is configured", body = super::error::ErrorBody)))]
pub(crate) async fn summary(
    State(state): State<ControlState>,
    headers: HeaderMap,
) -> Result<Json<DirectorySummary>, ApiError> {
    let snapshot = state.shared.load();
    admit(&state, &snapshot, &headers, Need::Directory)?;
    let directory = &view(&snapshot)?.directory;
    let mut homes = HashMap::new();
    for b in 0..directory.n_buckets() {
        let home = &directory.dc_names()[usize::from(directory.bucket(b).home)];
        *homes.entry(home.clone()).or_insert(0) += 1;
    }
    Ok(Json(DirectorySummary {
        buckets: directory.n_buckets(),
        pins: directory.n_pins(),
        homes,
    }))
}

/// Pin a user to a home and replica.
#[utoipa::path(put, path = "/v1/users/{id}/pin", request_body = PlacementBody,
    params(("id" = String, Path, min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$",
        description = "user id, URL-escaped: 1 to 256 bytes of UTF-8 (`MAX_USER_ID_BYTES`) without control characters")), security(("bearer" = [])),
    responses((status = 200, description = "stored and published", body = Accepted),
        (status = 404, description = "no user directory is configured", body = super::error::ErrorBody),
        (status = 500, description = "the state store could not write the change", body = super::error::ErrorBody),
        (status = 503, description = "read-only: the state store cannot write; or the server is shutting down", body = super::error::ErrorBody)))]
pub(crate) async fn pin(
    State(state): State<ControlState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Accepted>, ApiError> {
    let snapshot = state.shared.load();
    let caller = admit(&state, &snapshot, &headers, Need::Operator)?;
    checked_id(&id)?;
    view(&snapshot)?;
    let body: PlacementBody =
        read_json(body, snapshot.loaded.config.control.body_limit, None).await?;
    let stored = placement(&snapshot, &body.home, &body.replica)?;
    let entry = audit(
        &caller,
        "pin",
        &id,
        serde_json::to_value(&body).unwrap_or_default(),
        state.clock.now(),
    );
    let change = Change::Directory(DirectoryChange::Pins(vec![(id.clone(), Some(stored))]));
    applied(state.handle.apply(change, entry, true).await, "pin", &id)
}

/// Remove a user's pin (back to its bucket).
#[utoipa::path(delete, path = "/v1/users/{id}/pin", params(("id" = String, Path, min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$",
        description = "user id, URL-escaped: 1 to 256 bytes of UTF-8 (`MAX_USER_ID_BYTES`) without control characters")),
    security(("bearer" = [])),
    responses((status = 200, description = "stored and published: the user follows its bucket again", body = Accepted),
        (status = 404, description = "no user directory is configured", body = super::error::ErrorBody),
        (status = 500, description = "the state store could not write the change", body = super::error::ErrorBody),
        (status = 503, description = "read-only: the state store cannot write; or the server is shutting down", body = super::error::ErrorBody)))]
pub(crate) async fn unpin(
    State(state): State<ControlState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Accepted>, ApiError> {
    let snapshot = state.shared.load();
    let caller = admit(&state, &snapshot, &headers, Need::Operator)?;
    checked_id(&id)?;
    view(&snapshot)?;
    let entry = audit(
        &caller,
        "unpin",
        &id,
        serde_json::Value::Null,
        state.clock.now(),
    );
    let change = Change::Directory(DirectoryChange::Pins(vec![(id.clone(), None)]));
    applied(state.handle.apply(change, entry, true).await, "unpin", &id)
}
