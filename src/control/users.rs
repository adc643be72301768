//! The user directory over HTTP: lookups for frontends, pins, bucket moves, bulk import with a
//! change limit, export and restore.
//!
//! Writes that may move many users (imports, restores, bucket moves) are measured first: if they
//! would move more than `directory.change_limit` of the users, they are refused with the report
//! of what they would change unless `confirm=true`; `dry_run=true` returns the same report
//! without changing anything. Imports are streamed and checked row by row; a bad row is reported
//! with its line number and nothing is applied.

// utoipa's `#[utoipa::path]` expands `Query<T>` parameters with a path the lint flags.
#![allow(unused_qualifications)]

use std::collections::HashMap;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::{IntoParams, ToSchema};

use crate::directory::{Directory, Placement, check_user_id};
use crate::state::{DirectoryView, Snapshot, reason_label, source_label};
use crate::store::{Change, DirectoryChange, StoredPlacement};

use super::ControlState;
use super::api::{Accepted, admit, applied, audit, read_json};
use super::auth::Need;
use super::error::ApiError;

/// Most row errors listed in one refused import.
const MAX_ROW_ERRORS: usize = 100;
/// Bytes per chunk of a streamed export.
const EXPORT_CHUNK: usize = 64 * 1024;

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
    bucket: u32,
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

/// A directory summary.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DirectorySummary {
    buckets: u32,
    pins: usize,
    /// Buckets whose home is each datacenter.
    homes: HashMap<String, u32>,
}

fn view(snapshot: &Snapshot) -> Result<&DirectoryView, ApiError> {
    snapshot
        .directory
        .as_ref()
        .ok_or_else(|| ApiError::not_found("no user directory is configured"))
}

fn placement(snapshot: &Snapshot, home: &str, replica: &str) -> Result<StoredPlacement, ApiError> {
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

fn checked_id(id: &str) -> Result<(), ApiError> {
    check_user_id(id).map_err(|error| ApiError::bad_request(format!("user id: {error}")))
}

/// Where a user's data lives and which datacenter to use now.
#[utoipa::path(get, path = "/v1/users/{id}", params(("id" = String, Path, description = "user id, URL-escaped")),
    security(("bearer" = [])), responses((status = 200, body = UserView), (status = 400, body = super::error::ErrorBody)))]
pub(crate) async fn get_user(
    State(state): State<ControlState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<UserView>, ApiError> {
    let snapshot = state.shared.load();
    admit(&state, &snapshot, &headers, Need::Directory)?;
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
#[utoipa::path(get, path = "/v1/directory", security(("bearer" = [])), responses((status = 200, body = DirectorySummary)))]
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
    params(("id" = String, Path, description = "user id, URL-escaped")), security(("bearer" = [])),
    responses((status = 200, body = Accepted)))]
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
#[utoipa::path(delete, path = "/v1/users/{id}/pin", params(("id" = String, Path, description = "user id, URL-escaped")),
    security(("bearer" = [])), responses((status = 200, body = Accepted)))]
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

/// Move buckets to another home or replica.
#[utoipa::path(post, path = "/v1/directory/buckets", request_body = BucketMoves, security(("bearer" = [])),
    responses((status = 200, body = ChangeReport), (status = 409, body = ChangeReport, description = "over the change limit")))]
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
        if m.bucket >= directory.n_buckets() {
            return Err(ApiError::bad_request(format!(
                "moves[{i}].bucket: {} is not below {}",
                m.bucket,
                directory.n_buckets()
            )));
        }
        let stored = placement(&snapshot, &m.home, &m.replica)?;
        if placement_names(directory, directory.bucket(m.bucket))
            != (m.home.as_str(), m.replica.as_str())
        {
            report.buckets_changed += 1;
        }
        moves.push((m.bucket, stored));
    }
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
    responses((status = 200, body = ChangeReport), (status = 400, body = super::error::ErrorBody), (status = 409, body = ChangeReport)))]
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
    let mut last: HashMap<&str, &StoredPlacement> = HashMap::with_capacity(rows.len());
    for (user, p) in &rows {
        last.insert(user.as_str(), p);
    }
    let mut moved = 0usize;
    for (user, p) in &last {
        let current = directory.lookup(user);
        let now_names = placement_names(&directory, current.placement);
        let same = now_names == (p.home.as_str(), p.replica.as_str());
        match directory.pin(user) {
            None => report.pins_added += 1,
            Some(_) if !same => report.pins_changed += 1,
            Some(_) => {}
        }
        if !same {
            moved += 1;
        }
    }
    let population = directory.n_pins() + report.pins_added;
    report.share = moved as f64 / population.max(1) as f64;
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

/// Export the whole directory as JSON lines: a header, every bucket, every pin.
#[utoipa::path(get, path = "/v1/directory/export", security(("bearer" = [])),
    responses((status = 200, body = String, content_type = "application/x-ndjson")))]
pub(crate) async fn export(
    State(state): State<ControlState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let snapshot = state.shared.load();
    admit(&state, &snapshot, &headers, Need::Operator)?;
    let directory = view(&snapshot)?.directory.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    // The directory is an immutable snapshot: walk it on a blocking thread while the client
    // reads, so a 10M-pin export never sits whole in memory.
    tokio::task::spawn_blocking(move || {
        let mut chunk = String::with_capacity(EXPORT_CHUNK + 256);
        let send = |chunk: &mut String| {
            let bytes = Bytes::from(std::mem::take(chunk));
            tx.blocking_send(Ok(bytes)).is_ok()
        };
        chunk.push_str(
            &serde_json::json!({ "meridian_directory": 1, "buckets": directory.n_buckets() })
                .to_string(),
        );
        chunk.push('\n');
        for b in 0..directory.n_buckets() {
            let (home, replica) = placement_names(&directory, directory.bucket(b));
            chunk.push_str(
                &serde_json::json!({ "bucket": b, "home": home, "replica": replica }).to_string(),
            );
            chunk.push('\n');
            if chunk.len() >= EXPORT_CHUNK && !send(&mut chunk) {
                return;
            }
        }
        for (user, p) in directory.pins() {
            let (home, replica) = placement_names(&directory, p);
            chunk.push_str(
                &serde_json::json!({ "user": user, "home": home, "replica": replica }).to_string(),
            );
            chunk.push('\n');
            if chunk.len() >= EXPORT_CHUNK && !send(&mut chunk) {
                return;
            }
        }
        send(&mut chunk);
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
}

/// Restore an export: the whole directory, or with `user=` one user's entry only.
#[utoipa::path(post, path = "/v1/directory/restore", params(BulkParams), request_body(content = String, content_type = "application/x-ndjson"),
    security(("bearer" = [])), responses((status = 200, body = ChangeReport), (status = 409, body = ChangeReport)))]
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
        match (&wanted, directory.pin(user)) {
            (Some(_), None) => report.pins_added = 1,
            (Some(p), Some(current))
                if placement_names(&directory, current)
                    != (p.home.as_str(), p.replica.as_str()) =>
            {
                report.pins_changed = 1;
            }
            (None, Some(_)) => report.pins_removed = 1,
            _ => {}
        }
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
    let mut moved_buckets = 0;
    for (b, p) in export.buckets.iter().enumerate() {
        let current = ((b as u32) < directory.n_buckets())
            .then(|| placement_names(&directory, directory.bucket(b as u32)));
        if current != Some((p.home.as_str(), p.replica.as_str())) {
            moved_buckets += 1;
        }
    }
    report.buckets_changed = moved_buckets;
    let incoming: HashMap<&str, &StoredPlacement> =
        export.pins.iter().map(|(u, p)| (u.as_str(), p)).collect();
    for (user, p) in &incoming {
        match directory.pin(user) {
            None => report.pins_added += 1,
            Some(current)
                if placement_names(&directory, current)
                    != (p.home.as_str(), p.replica.as_str()) =>
            {
                report.pins_changed += 1;
            }
            Some(_) => {}
        }
    }
    // Counted without walking (and sorting) every pin: the pins not in the export are removed.
    let kept = incoming
        .keys()
        .filter(|u| directory.pin(u).is_some())
        .count();
    report.pins_removed = directory.n_pins() - kept;
    let pin_population = directory.n_pins().max(incoming.len()).max(1);
    let pin_share = (report.pins_added + report.pins_changed + report.pins_removed) as f64
        / pin_population as f64;
    let bucket_share = moved_buckets as f64 / f64::from(export.n_buckets);
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
    caller: &super::auth::Caller,
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
        .map_or(0.1, |d| d.change_limit)
}

fn import_limit(snapshot: &Snapshot) -> usize {
    snapshot
        .loaded
        .config
        .directory
        .as_ref()
        .map_or(1 << 30, |d| d.import_limit)
}

fn placement_names(directory: &Directory, p: Placement) -> (&str, &str) {
    let names = directory.dc_names();
    (
        names[usize::from(p.home)].as_str(),
        names[usize::from(p.replica)].as_str(),
    )
}

/// Streams `body` line by line into `line`, with 1-based line numbers; stops at `limit` bytes.
async fn for_each_line(
    body: Body,
    limit: usize,
    mut line: impl FnMut(usize, &str),
) -> Result<(), ApiError> {
    let mut stream = body.into_data_stream();
    let mut pending: Vec<u8> = Vec::new();
    let (mut read, mut number) = (0usize, 0usize);
    let mut handle = |bytes: &[u8], number: &mut usize| {
        *number += 1;
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim_end_matches('\r');
        if !text.trim().is_empty() {
            line(*number, text);
        }
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
        read += chunk.len();
        if read > limit {
            return Err(ApiError::payload_too_large(limit));
        }
        pending.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
            handle(&pending[start..start + end], &mut number);
            start += end + 1;
        }
        pending.drain(..start);
    }
    if !pending.is_empty() {
        handle(&pending, &mut number);
    }
    Ok(())
}

/// A pin row of an import or export.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PinRow {
    user: String,
    home: String,
    replica: String,
}

/// Reads import rows, checking each; every bad row is reported with its line number.
async fn read_rows(
    body: Body,
    limit: usize,
    csv: bool,
    snapshot: &Snapshot,
) -> Result<Vec<(String, StoredPlacement)>, ApiError> {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for_each_line(body, limit, |number, line| {
        let parsed = if csv {
            parse_csv(line).and_then(|fields| match fields.as_slice() {
                [user, home, replica] => Ok(PinRow {
                    user: user.clone(),
                    home: home.clone(),
                    replica: replica.clone(),
                }),
                _ => Err(format!(
                    "expected 3 fields (user,home,replica), found {}",
                    fields.len()
                )),
            })
        } else {
            serde_json::from_str::<PinRow>(line).map_err(|e| e.to_string())
        };
        // A CSV header line is allowed first.
        if csv && number == 1 && line.trim() == "user,home,replica" {
            return;
        }
        let checked = parsed.and_then(|row| {
            check_user_id(&row.user).map_err(|e| format!("user id: {e}"))?;
            let placement = placement(snapshot, &row.home, &row.replica).map_err(|e| e.message)?;
            Ok((row.user, placement))
        });
        match checked {
            Ok(row) => rows.push(row),
            Err(message) if errors.len() < MAX_ROW_ERRORS => {
                errors.push(format!("line {number}: {message}"))
            }
            Err(_) => {}
        }
    })
    .await?;
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(ApiError::bad_request(format!(
            "nothing was imported; bad rows:\n{}",
            errors.join("\n")
        )))
    }
}

/// Parses one CSV record of plain or double-quoted fields (RFC 4180, one line).
fn parse_csv(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("unterminated quoted field".to_owned()),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => return Err(format!("unexpected {c:?} after a quoted field")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

/// A parsed export.
struct Export {
    n_buckets: u32,
    buckets: Vec<StoredPlacement>,
    pins: Vec<(String, StoredPlacement)>,
}

/// Reads an export (header, buckets in order, pins), checking every line.
async fn read_export(body: Body, limit: usize, snapshot: &Snapshot) -> Result<Export, ApiError> {
    #[derive(Deserialize)]
    #[serde(untagged, deny_unknown_fields)]
    enum Line {
        Header {
            meridian_directory: u32,
            buckets: u32,
        },
        Bucket {
            bucket: u32,
            home: String,
            replica: String,
        },
        Pin {
            user: String,
            home: String,
            replica: String,
        },
    }
    let mut export = Export {
        n_buckets: 0,
        buckets: Vec::new(),
        pins: Vec::new(),
    };
    let mut errors = Vec::new();
    let mut seen_header = false;
    for_each_line(body, limit, |number, text| {
        let result = match serde_json::from_str::<Line>(text) {
            Ok(Line::Header {
                meridian_directory: 1,
                buckets,
            }) if number == 1 => {
                seen_header = true;
                export.n_buckets = buckets;
                Ok(())
            }
            Ok(Line::Header { .. }) => Err("unexpected or unsupported header".to_owned()),
            Ok(Line::Bucket {
                bucket,
                home,
                replica,
            }) => {
                if bucket as usize != export.buckets.len() {
                    Err(format!(
                        "bucket {bucket} out of order (expected {})",
                        export.buckets.len()
                    ))
                } else {
                    placement(snapshot, &home, &replica)
                        .map(|p| export.buckets.push(p))
                        .map_err(|e| e.message)
                }
            }
            Ok(Line::Pin {
                user,
                home,
                replica,
            }) => check_user_id(&user)
                .map_err(|e| format!("user id: {e}"))
                .and_then(|()| placement(snapshot, &home, &replica).map_err(|e| e.message))
                .map(|p| export.pins.push((user, p))),
            Err(e) => Err(e.to_string()),
        };
        if let Err(message) = result
            && errors.len() < MAX_ROW_ERRORS
        {
            errors.push(format!("line {number}: {message}"));
        }
    })
    .await?;
    if !seen_header {
        errors.insert(
            0,
            "line 1: not a meridian directory export header".to_owned(),
        );
    }
    if errors.is_empty() {
        Ok(export)
    } else {
        Err(ApiError::bad_request(format!(
            "nothing was restored; bad lines:\n{}",
            errors.join("\n")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_csv;

    #[test]
    fn csv_fields_plain_and_quoted() {
        assert_eq!(parse_csv("a,b,c").unwrap(), ["a", "b", "c"]);
        assert_eq!(
            parse_csv("\"a,1\",b,\"say \"\"hi\"\"\"").unwrap(),
            ["a,1", "b", "say \"hi\""]
        );
        assert_eq!(parse_csv("a,,c").unwrap(), ["a", "", "c"]);
        assert!(parse_csv("\"a,b").is_err());
        assert!(parse_csv("\"a\"x,b").is_err());
    }
}
