//! `GET`/`PUT /v1/querylog`: the query log's sampling rate, read and changed at runtime for a
//! while (then the configured rate comes back), operator only and audited like `PUT /v1/log`.
//! The log itself is `crate::querylog`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;

use crate::config::per_million;
use crate::querylog::{PER_MILLION, QueryLog};

use super::ControlState;
use super::auth::Need;
use super::error::ApiError;
use super::log::{DEFAULT_REVERT_SECONDS, MAX_REVERT_SECONDS};
use super::write::{admit, audit, read_json, store_audit_only};

/// The body of `PUT /v1/querylog`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueryLogBody {
    /// The share of queries to log, 0 (off) or 0.000001 to 1 (every query).
    #[schema(minimum = 0, maximum = 1)]
    sample: f64,
    /// Seconds until the configured rate (`server.query_log.sample`) comes back, 1 to 86400;
    /// default 600.
    #[schema(minimum = 1, maximum = 86400)]
    revert_after_seconds: Option<u64>,
}

/// The query log's state.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct QueryLogView {
    /// The share of queries logged now (0: off).
    sample: f64,
    /// The share `server.query_log.sample` sets, which a change reverts to.
    configured_sample: f64,
    /// `stderr` or the file's path.
    output: String,
    /// Lines written since the server started.
    lines_written: u64,
    /// Lines dropped since the server started because the writer was behind.
    lines_dropped: u64,
    /// After a change: seconds until the configured rate comes back.
    #[serde(skip_serializing_if = "Option::is_none")]
    revert_after_seconds: Option<u64>,
}

fn view(log: &QueryLog, revert_after_seconds: Option<u64>) -> QueryLogView {
    let share = |per_million: u32| f64::from(per_million) / f64::from(PER_MILLION);
    QueryLogView {
        sample: share(log.rate()),
        configured_sample: share(log.configured()),
        output: log.output().to_string(),
        lines_written: log.written(),
        lines_dropped: log.dropped(),
        revert_after_seconds,
    }
}

/// The query log's rate and counts (operator).
#[utoipa::path(get, path = "/v1/querylog", security(("bearer" = [])),
    responses((status = 200, description = "the query log's rate, output and counts", body = QueryLogView)))]
pub(crate) async fn get_querylog(
    State(state): State<ControlState>,
    headers: HeaderMap,
) -> Result<Json<QueryLogView>, ApiError> {
    let snapshot = state.shared.load();
    admit(&state, &snapshot, &headers, Need::Operator)?;
    Ok(Json(view(&state.query_log, None)))
}

/// Change the query log's rate for a while (operator, audited).
#[utoipa::path(put, path = "/v1/querylog", request_body = QueryLogBody, security(("bearer" = [])),
    responses((status = 200, description = "the rate is in force until it reverts", body = QueryLogView),
        (status = 500, description = "the state store could not write the audit entry", body = super::error::ErrorBody),
        (status = 503, description = "the state store cannot write", body = super::error::ErrorBody)))]
pub(crate) async fn put_querylog(
    State(state): State<ControlState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<QueryLogView>, ApiError> {
    let snapshot = state.shared.load();
    let caller = admit(&state, &snapshot, &headers, Need::Operator)?;
    let limit = snapshot.loaded.config.control.body_limit;
    let body: QueryLogBody = read_json(body, limit, None).await?;
    let rate = per_million(body.sample).ok_or_else(|| {
        ApiError::bad_request(format!(
            "sample: {} is not 0, or from 0.000001 to 1",
            body.sample
        ))
    })?;
    let seconds = body.revert_after_seconds.unwrap_or(DEFAULT_REVERT_SECONDS);
    if !(1..=MAX_REVERT_SECONDS).contains(&seconds) {
        return Err(ApiError::bad_request(format!(
            "revert_after_seconds: {seconds} is not between 1 and {MAX_REVERT_SECONDS}"
        )));
    }
    let entry = audit(
        &caller,
        "querylog",
        "sample",
        serde_json::json!({"sample": body.sample, "revert_after_seconds": seconds}),
        state.clock.now(),
    );
    store_audit_only(&state, entry).await?;
    // Audited first, so that no change goes unrecorded.
    let log = Arc::clone(&state.query_log);
    let change = log.set_rate(rate);
    info!(sample = body.sample, revert_after_seconds = seconds, actor = %caller.name, "query log rate changed");
    spawn_revert(Arc::clone(&log), change, Duration::from_secs(seconds));
    Ok(Json(view(&log, Some(seconds))))
}

/// Puts the configured rate back after `after`, unless another change came since.
fn spawn_revert(log: Arc<QueryLog>, change: u64, after: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        if log.revert(change) {
            info!(
                sample = f64::from(log.configured()) / f64::from(PER_MILLION),
                "query log rate reverted"
            );
        }
    });
}
