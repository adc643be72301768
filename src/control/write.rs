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
use crate::store::{AuditEntry, Change, StoreError};

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

/// A whole number in a JSON body, written either way JSON allows: `60` or `60.0`.
///
/// JSON Schema (and so the OpenAPI document) counts `60.0` as an integer; serde does not. A
/// fraction, a negative number or one beyond `T` is refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Whole<T>(pub(crate) T);

impl<'de, T: TryFrom<u64>> Deserialize<'de> for Whole<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let number = serde_json::Number::deserialize(deserializer)?;
        let whole = number.as_u64().or_else(|| {
            // Every whole f64 below 2^64 converts exactly; the cast cannot truncate past the
            // range check.
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(f))
                .map(|f| f as u64)
        });
        whole
            .and_then(|whole| T::try_from(whole).ok())
            .map(Whole)
            .ok_or_else(|| D::Error::custom(format!("{number} is not a whole number in range")))
    }
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

/// Reads a JSON body of at most the configured size. With `empty`, the body is optional: an
/// absent or blank body, or `null`, is `empty` (the OpenAPI document marks such a body as not
/// required, and a client may say "no body" either way).
pub(super) async fn read_json<T: for<'de> Deserialize<'de>>(
    body: Body,
    limit: usize,
    empty: Option<T>,
) -> Result<T, ApiError> {
    let bytes: Bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::payload_too_large(limit))?;
    let invalid =
        |error: serde_json::Error| ApiError::bad_request(format!("invalid JSON body: {error}"));
    match empty {
        Some(empty) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(empty),
        Some(empty) => Ok(serde_json::from_slice::<Option<T>>(&bytes)
            .map_err(invalid)?
            .unwrap_or(empty)),
        None => serde_json::from_slice(&bytes).map_err(invalid),
    }
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
        // The state manager has logged it (once, with the write's context) and kept it.
        Err(error @ (ApplyError::ReadOnly(_) | ApplyError::Unreachable(_))) => {
            Err(ApiError::read_only(error.to_string()))
        }
        // The state manager has logged and kept it (with the write's context).
        Err(error @ (ApplyError::Store(_) | ApplyError::Fleet(_))) => Err(ApiError {
            kind: None,
            ..ApiError::internal(error.to_string())
        }),
    }
}

/// Stores `entry` alone, for a change that lives outside the state (the log filter, the query
/// log's rate): 503 while the store cannot write, 500 when it fails otherwise.
pub(super) async fn store_audit_only(
    state: &ControlState,
    entry: AuditEntry,
) -> Result<(), ApiError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || store.apply(&Change::AuditOnly, &entry))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map(|_| ())
        .map_err(|error| {
            if error.is_io() {
                ApiError::read_only(format!("the state store cannot write now: {error}"))
            } else {
                ApiError::store_failed(format!("the state store failed: {error}"))
            }
        })
}

/// A read or an audit-only write of the store (audit log, configuration versions, log filter
/// changes) that failed: 503 while the disk fails (logged here at `warn`), else 500 (logged and
/// kept by the `observe` middleware, as every 500 is).
pub(super) fn store_read_failed(what: &str, error: &StoreError) -> ApiError {
    if error.is_io() {
        tracing::warn!(%error, what, "state store read failed");
        ApiError::read_only(format!("the state store cannot be read now: {error}"))
    } else {
        ApiError::store_failed(format!("the state store failed ({what}): {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_are_read_either_way_json_writes_them() {
        let read = |text: &str| serde_json::from_str::<Whole<u32>>(text).map(|Whole(n)| n);
        assert_eq!(read("60").ok(), Some(60));
        assert_eq!(read("60.0").ok(), Some(60));
        assert_eq!(read("0").ok(), Some(0));
        assert_eq!(read("4294967295").ok(), Some(u32::MAX));
        for refused in [
            "60.5",
            "-1",
            "-0.5",
            "4294967296",
            "1e300",
            "\"60\"",
            "null",
        ] {
            assert!(read(refused).is_err(), "{refused}");
        }
    }

    #[derive(Debug, Default, PartialEq, Deserialize)]
    struct Options {
        force: bool,
    }

    #[tokio::test]
    async fn an_optional_body_may_be_absent_blank_or_null() {
        let read = |text: &'static str, empty: Option<Options>| {
            read_json::<Options>(Body::from(text), 1024, empty)
        };
        for absent in ["", "  \n", "null"] {
            assert_eq!(
                read(absent, Some(Options::default())).await,
                Ok(Options::default()),
                "{absent:?}"
            );
        }
        assert_eq!(
            read("{\"force\": true}", Some(Options::default())).await,
            Ok(Options { force: true })
        );
        // A required body may not be absent or null.
        for absent in ["", "null"] {
            assert_eq!(
                read(absent, None).await.unwrap_err().status,
                400,
                "{absent:?}"
            );
        }
    }
}
