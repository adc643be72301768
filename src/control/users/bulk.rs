//! Bulk directory writes: bucket moves, imports and restores.
//!
//! Each is measured before it is applied: above `directory.change_limit` it is refused with the
//! report of what it would change unless confirmed, and a dry run returns that report alone.

// utoipa's `#[utoipa::path]` expands `Query<T>` parameters with a path the lint flags.
#![allow(unused_qualifications)]

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::config::raw::{DEFAULT_CHANGE_LIMIT, DEFAULT_IMPORT_LIMIT_BYTES};
use crate::dns::Snapshot;
use crate::store::{Change, DirectoryChange};

use super::super::ControlState;
use super::super::auth::{Caller, Need};
use super::super::error::ApiError;
use super::super::extract::Query;
use super::super::write::{Whole, admit, applied, audit, read_json};
use super::export::read_export;
use super::lines::read_rows;
use super::{checked_id, placement, view};

/// Bucket moves.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BucketMoves {
    moves: Vec<BucketMove>,
    /// Report what would change without changing it.
    #[serde(default)]
    dry_run: bool,
    /// Apply even above the change limit.
    #[serde(default)]
    confirm: bool,
}

/// One bucket move.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BucketMove {
    /// Below the directory's number of buckets.
    #[schema(value_type = u32)]
    bucket: Whole<u32>,
    home: String,
    replica: String,
}

/// Options of imports and restores.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub(crate) struct BulkParams {
    /// `ndjson` (default) or `csv`.
    format: Option<String>,
    /// Report what would change without changing it.
    #[serde(default)]
    dry_run: bool,
    /// Apply even above the change limit.
    #[serde(default)]
    confirm: bool,
    /// Restore: only this user's entry.
    user: Option<String>,
}

/// What a bulk change would do (or did).
#[derive(Debug, Default, Serialize, ToSchema)]
pub(crate) struct ChangeReport {
    /// Rows read.
    rows: usize,
    /// Users pinned who were not.
    pins_added: usize,
    /// Pins that change.
    pins_changed: usize,
    /// Pins removed.
    pins_removed: usize,
    /// Buckets whose placement changes.
    buckets_changed: usize,
    /// Share of users whose placement changes.
    share: f64,
    /// The configured limit.
    limit: f64,
    /// Whether it was applied.
    applied: bool,
    /// The generation serving it, when applied.
    generation: Option<u64>,
}

/// Move buckets to another home or replica.
#[utoipa::path(post, path = "/v1/directory/buckets", request_body = BucketMoves, security(("bearer" = [])),
    responses((status = 200, description = "applied, or measured only (`dry_run`)", body = ChangeReport),
        (status = 404, description = "no user directory is configured", body = super::super::error::ErrorBody),
        (status = 409, description = "over the change limit and not confirmed: what it would change", body = ChangeReport),
        (status = 500, description = "the state store could not write the change", body = super::super::error::ErrorBody),
        (status = 503, description = "read-only: the state store cannot write; or the server is shutting down", body = super::super::error::ErrorBody)))]
pub(crate) async fn move_buckets(
    State(state): State<ControlState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let snapshot = state.shared.load();
    let caller = admit(&state, &snapshot, &headers, Need::Operator)?;
    let directory = &view(&snapshot)?.directory;
    let body: BucketMoves =
        read_json(body, snapshot.loaded.config.control.body_limit, None).await?;
    let mut moves = Vec::new();
    let mut report = ChangeReport {
        rows: body.moves.len(),
        limit: change_limit(&snapshot),
        ..ChangeReport::default()
    };
    for (i, m) in body.moves.iter().enumerate() {
        let Whole(bucket) = m.bucket;
        if bucket >= directory.n_buckets() {
            return Err(ApiError::bad_request(format!(
                "moves[{i}].bucket: {bucket} is not below {}",
                directory.n_buckets()
            )));
        }
        moves.push((bucket, placement(&snapshot, &m.home, &m.replica)?));
    }
    report.buckets_changed = directory.count_bucket_changes(
        body.moves
            .iter()
            .map(|m| (m.bucket.0, (m.home.as_str(), m.replica.as_str()))),
    );
    report.share = report.buckets_changed as f64 / f64::from(directory.n_buckets());
    let detail =
        serde_json::json!({ "moves": moves.len(), "buckets_changed": report.buckets_changed });
    let change = Change::Directory(DirectoryChange::Buckets(moves));
    finish(
        &state,
        &caller,
        change,
        report,
        body.dry_run,
        body.confirm,
        "move-buckets",
        detail,
    )
    .await
}

/// Bulk-import pins: JSON lines `{"user": ..., "home": ..., "replica": ...}` or CSV
/// `user,home,replica`, streamed.
#[utoipa::path(post, path = "/v1/directory/import", params(BulkParams), request_body(content = String, content_type = "application/x-ndjson"),
    security(("bearer" = [])),
    responses((status = 200, description = "applied all at once (with etcd, a larger import is written as a new generation of the pins and switched to in one transaction), or measured only (`dry_run`)", body = ChangeReport),
        (status = 404, description = "no user directory is configured", body = super::super::error::ErrorBody),
        (status = 409, description = "over the change limit and not confirmed: what it would change", body = ChangeReport),
        (status = 500, description = "the state store could not write the change", body = super::super::error::ErrorBody),
        (status = 503, description = "read-only: the state store cannot write; or the server is shutting down", body = super::super::error::ErrorBody)))]
pub(crate) async fn import(
    State(state): State<ControlState>,
    headers: HeaderMap,
    Query(params): Query<BulkParams>,
    body: Body,
) -> Result<Response, ApiError> {
    let snapshot = state.shared.load();
    let caller = admit(&state, &snapshot, &headers, Need::Operator)?;
    let directory = view(&snapshot)?.directory.clone();
    let csv = match params.format.as_deref() {
        None | Some("ndjson") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format: {other:?} is not ndjson or csv"
            )));
        }
    };
    let limit = import_limit(&snapshot);
    let rows = read_rows(body, limit, csv, &snapshot).await?;
    let mut report = ChangeReport {
        rows: rows.len(),
        limit: change_limit(&snapshot),
        ..ChangeReport::default()
    };
    // Duplicates: the last row of a user wins, as when applied.
    let changes = directory.count_pin_changes(
        rows.iter()
            .map(|(user, p)| (user.as_str(), Some((p.home.as_str(), p.replica.as_str())))),
    );
    report.pins_added = changes.added;
    report.pins_changed = changes.changed;
    let population = directory.n_pins() + changes.added;
    report.share = changes.moved as f64 / population.max(1) as f64;
    let detail = serde_json::json!({ "rows": rows.len(), "pins_added": report.pins_added, "pins_changed": report.pins_changed });
    let change = Change::Directory(DirectoryChange::Pins(
        rows.into_iter().map(|(user, p)| (user, Some(p))).collect(),
    ));
    finish(
        &state,
        &caller,
        change,
        report,
        params.dry_run,
        params.confirm,
        "import",
        detail,
    )
    .await
}

/// Restore an export: the whole directory, or with `user=` one user's entry only.
#[utoipa::path(post, path = "/v1/directory/restore", params(BulkParams), request_body(content = String, content_type = "application/x-ndjson"),
    security(("bearer" = [])),
    responses((status = 200, description = "restored all at once (with etcd, as a new generation of the pins switched to in one transaction), or measured only (`dry_run`)", body = ChangeReport),
        (status = 404, description = "no user directory is configured", body = super::super::error::ErrorBody),
        (status = 409, description = "over the change limit and not confirmed: what it would change", body = ChangeReport),
        (status = 500, description = "the state store could not write the change", body = super::super::error::ErrorBody),
        (status = 503, description = "read-only: the state store cannot write; or the server is shutting down", body = super::super::error::ErrorBody)))]
pub(crate) async fn restore(
    State(state): State<ControlState>,
    headers: HeaderMap,
    Query(params): Query<BulkParams>,
    body: Body,
) -> Result<Response, ApiError> {
    let snapshot = state.shared.load();
    let caller = admit(&state, &snapshot, &headers, Need::Operator)?;
    let directory = view(&snapshot)?.directory.clone();
    let export = read_export(body, import_limit(&snapshot), &snapshot).await?;
    let mut report = ChangeReport {
        rows: export.buckets.len() + export.pins.len(),
        limit: change_limit(&snapshot),
        ..ChangeReport::default()
    };
    if let Some(user) = &params.user {
        checked_id(user)?;
        let wanted = export
            .pins
            .iter()
            .rev()
            .find(|(u, _)| u == user)
            .map(|(_, p)| p.clone());
        let changes = directory.count_pin_changes([(
            user.as_str(),
            wanted
                .as_ref()
                .map(|p| (p.home.as_str(), p.replica.as_str())),
        )]);
        report.pins_added = changes.added;
        report.pins_changed = changes.changed;
        report.pins_removed = changes.removed;
        // One user is always within the limit.
        let change = Change::Directory(DirectoryChange::Pins(vec![(user.clone(), wanted)]));
        let detail = serde_json::json!({ "user": user });
        return finish(
            &state,
            &caller,
            change,
            report,
            params.dry_run,
            true,
            "restore-user",
            detail,
        )
        .await;
    }
    if !export.n_buckets.is_power_of_two() || export.buckets.len() != export.n_buckets as usize {
        return Err(ApiError::bad_request(format!(
            "the export declares {} buckets but holds {}",
            export.n_buckets,
            export.buckets.len()
        )));
    }
    report.buckets_changed = directory.count_bucket_changes(
        (0..)
            .zip(&export.buckets)
            .map(|(b, p)| (b, (p.home.as_str(), p.replica.as_str()))),
    );
    let changes = directory.count_pin_replacement(
        export
            .pins
            .iter()
            .map(|(user, p)| (user.as_str(), (p.home.as_str(), p.replica.as_str()))),
    );
    report.pins_added = changes.added;
    report.pins_changed = changes.changed;
    report.pins_removed = changes.removed;
    let pin_population = directory.n_pins().max(changes.users).max(1);
    let pin_share =
        (changes.added + changes.changed + changes.removed) as f64 / pin_population as f64;
    let bucket_share = report.buckets_changed as f64 / f64::from(export.n_buckets);
    report.share = pin_share.max(bucket_share);
    let detail = serde_json::json!({ "buckets": export.n_buckets, "pins": export.pins.len() });
    let change = Change::Directory(DirectoryChange::Replace {
        n_buckets: export.n_buckets,
        buckets: export.buckets,
        pins: export.pins,
    });
    finish(
        &state,
        &caller,
        change,
        report,
        params.dry_run,
        params.confirm,
        "restore",
        detail,
    )
    .await
}

/// Applies a measured change, or explains why not.
#[allow(clippy::too_many_arguments)]
async fn finish(
    state: &ControlState,
    caller: &Caller,
    change: Change,
    mut report: ChangeReport,
    dry_run: bool,
    confirm: bool,
    action: &str,
    detail: serde_json::Value,
) -> Result<Response, ApiError> {
    if dry_run {
        return Ok(Json(report).into_response());
    }
    if report.share > report.limit && !confirm {
        return Ok((StatusCode::CONFLICT, Json(report)).into_response());
    }
    let entry = audit(caller, action, "directory", detail, state.clock.now());
    let Json(accepted) = applied(
        state.handle.apply(change, entry, true).await,
        action,
        "directory",
    )?;
    report.applied = true;
    report.generation = Some(accepted.generation);
    Ok(Json(report).into_response())
}

fn change_limit(snapshot: &Snapshot) -> f64 {
    snapshot
        .loaded
        .config
        .directory
        .as_ref()
        .map_or(DEFAULT_CHANGE_LIMIT, |d| d.change_limit)
}

fn import_limit(snapshot: &Snapshot) -> usize {
    snapshot
        .loaded
        .config
        .directory
        .as_ref()
        .map_or(DEFAULT_IMPORT_LIMIT_BYTES, |d| d.import_limit)
}
