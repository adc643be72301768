//! `GET /v1/audit`: the audit log of every write, oldest first, paged by sequence number.

// utoipa's `#[utoipa::path]` expands `Query<T>` parameters with a path the lint flags.
#![allow(unused_qualifications)]

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ControlState;
use super::auth::Need;
use super::error::ApiError;
use super::extract::Query;
use super::write::{admit, store_read_failed};

/// Audit entries per page when the request does not say.
const DEFAULT_PAGE: usize = 100;
/// Most audit entries per page.
const MAX_PAGE: usize = 1000;

/// Query parameters of `/v1/audit`.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct AuditParams {
    /// Entries after this sequence number.
    #[param(minimum = 0)]
    after: Option<i64>,
    /// At most this many (default 100; more than 1000 counts as 1000).
    #[param(minimum = 0)]
    limit: Option<i64>,
}

/// One audit log entry.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditView {
    seq: u64,
    unix_ms: u64,
    actor: String,
    role: String,
    action: String,
    target: String,
    /// What the change carried; `null` for changes without details (reload, instance drains).
    #[schema(value_type = Option<Object>)]
    detail: serde_json::Value,
}

/// The audit log (operator).
#[utoipa::path(get, path = "/v1/audit", params(AuditParams), security(("bearer" = [])),
    responses((status = 200, description = "audit entries, oldest first", body = [AuditView]),
        (status = 500, description = "the state store could not be read", body = super::error::ErrorBody),
        (status = 503, description = "the state store cannot be read now (I/O error)", body = super::error::ErrorBody)))]
pub(crate) async fn audit_log(
    State(state): State<ControlState>,
    headers: HeaderMap,
    Query(params): Query<AuditParams>,
) -> Result<Json<Vec<AuditView>>, ApiError> {
    let snapshot = state.shared.load();
    admit(&state, &snapshot, &headers, Need::Operator)?;
    // Signed in the query (what the document's int64 says), never negative in use.
    let non_negative = |name: &str, value: i64| {
        u64::try_from(value)
            .map_err(|_| ApiError::bad_request(format!("{name}: {value} is negative")))
    };
    let after = params
        .after
        .map(|after| non_negative("after", after))
        .transpose()?;
    let limit = params
        .limit
        .map(|limit| non_negative("limit", limit))
        .transpose()?
        .map_or(DEFAULT_PAGE, |limit| {
            usize::try_from(limit).unwrap_or(MAX_PAGE)
        })
        .min(MAX_PAGE);
    let store = state.store.clone();
    let entries = tokio::task::spawn_blocking(move || store.audit_log(after, limit))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| store_read_failed("audit log", &e))?;
    Ok(Json(
        entries
            .into_iter()
            .map(|(seq, e)| AuditView {
                seq,
                unix_ms: e.unix_ms,
                actor: e.actor,
                role: e.role,
                action: e.action,
                target: e.target,
                detail: e.detail,
            })
            .collect(),
    ))
}
