//! `PUT /v1/log`: change the log filter at runtime, for a while.
//!
//! The filter itself lives in the process's tracing subscriber, which `cli` builds with a reload
//! layer and hands over as [`LogLevels`]; this file only checks the request, audits it, applies
//! the filter through that handle and puts the default back when the time is up.
//! In-process test servers have no reloadable subscriber, so there the route answers 503.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;

use super::ControlState;
use super::auth::Need;
use super::error::ApiError;
use super::write::{admit, audit, read_json, store_audit_only};

/// The longest a changed filter may stay before it reverts: one day.
pub(super) const MAX_REVERT_SECONDS: u64 = 86_400;
/// How long a changed filter stays when the request does not say: ten minutes.
pub(super) const DEFAULT_REVERT_SECONDS: u64 = 600;

/// A function that replaces the process's log filter (with `true`) or only checks it (with
/// `false`), or says why the filter is invalid.
pub type SetFilter = Box<dyn Fn(&str, bool) -> Result<(), String> + Send + Sync>;

/// The process's log filter, changeable at runtime.
pub struct LogLevels {
    /// The filter the process started with, which every change reverts to.
    default: String,
    set: SetFilter,
    /// Counts changes, so that a revert timer of a change that was replaced since does nothing:
    /// an atomic because each timer task checks it without any other shared state.
    changes: AtomicU64,
}

impl LogLevels {
    /// Wraps `set`, which replaces the filter; `default` is the filter in force now.
    pub fn new(default: String, set: SetFilter) -> LogLevels {
        LogLevels {
            default,
            set,
            changes: AtomicU64::new(0),
        }
    }
}

/// The body of `PUT /v1/log`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogBody {
    /// A tracing filter, as `RUST_LOG` takes it, e.g. `info,meridian::routing=debug`.
    filter: String,
    /// Seconds until the start-up filter comes back, 1 to 86400; default 600.
    #[schema(minimum = 1, maximum = 86400)]
    revert_after_seconds: Option<u64>,
}

/// What `PUT /v1/log` did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LogView {
    /// The filter now in force.
    filter: String,
    /// The filter that comes back, and when.
    reverts_to: String,
    /// Seconds from now.
    revert_after_seconds: u64,
}

/// Change the log filter for a while (operator).
#[utoipa::path(put, path = "/v1/log", request_body = LogBody, security(("bearer" = [])),
    responses((status = 200, description = "the filter is in force until it reverts", body = LogView),
        (status = 500, description = "the state store could not write the audit entry", body = super::error::ErrorBody),
        (status = 503, description = "this process's logging cannot be changed at runtime, or the state store cannot write", body = super::error::ErrorBody)))]
pub(crate) async fn put_log(
    State(state): State<ControlState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<LogView>, ApiError> {
    let snapshot = state.shared.load();
    let caller = admit(&state, &snapshot, &headers, Need::Operator)?;
    let limit = snapshot.loaded.config.control.body_limit;
    let body: LogBody = read_json(body, limit, None).await?;
    let seconds = body.revert_after_seconds.unwrap_or(DEFAULT_REVERT_SECONDS);
    if !(1..=MAX_REVERT_SECONDS).contains(&seconds) {
        return Err(ApiError::bad_request(format!(
            "revert_after_seconds: {seconds} is not between 1 and {MAX_REVERT_SECONDS}"
        )));
    }
    let Some(levels) = state.log_levels.clone() else {
        return Err(ApiError::unavailable(
            "this process's log filter cannot be changed at runtime",
        ));
    };
    let invalid =
        |error: String| ApiError::bad_request(format!("filter {:?}: {error}", body.filter));
    (levels.set)(&body.filter, false).map_err(invalid)?;
    let entry = audit(
        &caller,
        "log",
        "filter",
        serde_json::json!({"filter": body.filter, "revert_after_seconds": seconds}),
        state.clock.now(),
    );
    store_audit_only(&state, entry).await?;
    // Audited first, so that no change goes unrecorded.
    (levels.set)(&body.filter, true).map_err(invalid)?;
    let change = levels.changes.fetch_add(1, Ordering::SeqCst) + 1;
    info!(filter = %body.filter, revert_after_seconds = seconds, actor = %caller.name, "log filter changed");
    spawn_revert(levels.clone(), change, Duration::from_secs(seconds));
    Ok(Json(LogView {
        filter: body.filter,
        reverts_to: levels.default.clone(),
        revert_after_seconds: seconds,
    }))
}

/// Puts the default filter back after `after`, unless another change came since.
fn spawn_revert(levels: Arc<LogLevels>, change: u64, after: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        if levels.changes.load(Ordering::SeqCst) != change {
            return;
        }
        match (levels.set)(&levels.default, true) {
            Ok(()) => info!(filter = %levels.default, "log filter reverted"),
            Err(error) => tracing::error!(%error, "the start-up log filter no longer applies"),
        }
    });
}
