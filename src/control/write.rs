//! What every write handler shares: admission (authenticate, rate-limit, authorize), reading a
//! bounded JSON body, the audit entry, and turning the state manager's outcome into a response.
//!
//! Every write authenticates (401), authorizes (403) and rate-limits (429) before it reads its
//! body, then goes to the state manager, which stores it with its audit entry and publishes the
//! new snapshot before the handler answers. This file defines no route.

use std::time::SystemTime;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::dns::Snapshot;
use crate::state::{ApplyError, unix_ms};
use crate::store::{AuditEntry, StoreError};

use super::ControlState;
use super::auth::{Budget, Caller, Need, authenticate};
use super::error::ApiError;

/// The outcome of an accepted write.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Accepted {
    /// The snapshot generation now serving, which includes the write.
    pub(super) generation: u64,
    /// The audit log sequence is kept by the store; this echoes what was done.
    action: String,
    /// What it was done to.
    target: String,
}

/// Authenticates, authorizes and rate-limits a request (its address was counted before it got
/// here). Authorization comes before the token's rate limit, so that a request the token may
/// not make (403) does not use up the token's budget: otherwise anyone holding one datacenter's
/// token could lock another caller out by making forbidden calls in its name.
pub(super) fn admit(
    state: &ControlState,
    snapshot: &Snapshot,
    headers: &HeaderMap,
    need: Need<'_>,
) -> Result<Caller, ApiError> {
    admit_to(state, snapshot, headers, need, Budget::General)
}

/// As [`admit`], counting the request against the token's `budget`.
pub(super) fn admit_to(
    state: &ControlState,
    snapshot: &Snapshot,
    headers: &HeaderMap,
    need: Need<'_>,
    budget: Budget,
) -> Result<Caller, ApiError> {
    let control = &snapshot.loaded.config.control;
    let caller = authenticate(headers, control)?;
    caller.require(need)?;
    state.limiter.check(&caller, control, budget)?;
    Ok(caller)
}

/// Reads a JSON body of at most the configured size; an empty body is `T::default()` when
/// `empty_ok`.
pub(super) async fn read_json<T: for<'de> Deserialize<'de>>(
    body: Body,
    limit: usize,
    empty: Option<T>,
) -> Result<T, ApiError> {
    let bytes: Bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::payload_too_large(limit))?;
    if bytes.iter().all(u8::is_ascii_whitespace)
        && let Some(empty) = empty
    {
        return Ok(empty);
    }
    serde_json::from_slice(&bytes)
        .map_err(|error| ApiError::bad_request(format!("invalid JSON body: {error}")))
}

pub(super) fn audit(
    caller: &Caller,
    action: &str,
    target: &str,
    detail: serde_json::Value,
    now: SystemTime,
) -> AuditEntry {
    AuditEntry {
        unix_ms: unix_ms(now),
        actor: caller.name.clone(),
        role: caller.role.to_string(),
        action: action.to_owned(),
        target: target.to_owned(),
        detail,
    }
}

pub(super) fn applied(
    result: Result<u64, ApplyError>,
    action: &str,
    target: &str,
) -> Result<Json<Accepted>, ApiError> {
    match result {
        Ok(generation) => Ok(Json(Accepted {
            generation,
            action: action.to_owned(),
            target: target.to_owned(),
        })),
        Err(ApplyError::Refused(message)) => Err(ApiError::conflict(message)),
        Err(ApplyError::ShuttingDown) => Err(ApiError::unavailable("the server is shutting down")),
        // The state manager has logged both (once, with the write's context).
        Err(error @ ApplyError::ReadOnly(_)) => Err(ApiError::read_only(error.to_string())),
        Err(error @ ApplyError::Store(_)) => Err(ApiError::internal(error.to_string())),
    }
}

/// A read of the store (audit log, configuration versions) that failed: 503 while the disk
/// fails, else 500; logged here, once, because no one else sees it.
pub(super) fn store_read_failed(what: &str, error: &StoreError) -> ApiError {
    if error.is_io() {
        tracing::warn!(%error, what, "state store read failed");
        ApiError::read_only(format!("the state store cannot be read now: {error}"))
    } else {
        tracing::error!(%error, what, "state store read failed");
        ApiError::internal(format!("the state store failed: {error}"))
    }
}
