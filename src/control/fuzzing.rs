//! The control plane's request decoders as plain functions, for the fuzz targets in `fuzz/`
//! (and their regression tests): each takes the bytes of a request body, decodes and checks it
//! exactly as its route does, and says what came of it. They store nothing and publish nothing.

use std::sync::OnceLock;
use std::time::SystemTime;

use axum::body::Body;

use crate::dns::Snapshot;

use super::datacenters::{ReportBody, validate_report};
use super::users::{read_export, read_rows};

/// The report TTL a decoded report gets when it names none (as `control.report_ttl_seconds`).
const DEFAULT_TTL_SECONDS: u32 = 10;

/// Decodes and checks a datacenter report body (`PUT /v1/datacenters/{dc}/report`).
///
/// # Errors
///
/// The route's 400 message.
pub fn decode_report(body: &[u8]) -> Result<(), String> {
    let report: ReportBody =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    validate_report(&report, DEFAULT_TTL_SECONDS, SystemTime::now())
        .map(drop)
        .map_err(|e| e.message)
}

/// Reads and checks the rows of a directory import (`POST /v1/users/import`, NDJSON or CSV)
/// against `snapshot`'s datacenters, with a body limit of `limit` bytes: the number of rows.
///
/// # Errors
///
/// The route's 400 or 413 message.
pub fn decode_import(
    snapshot: &Snapshot,
    body: &[u8],
    csv: bool,
    limit: usize,
) -> Result<usize, String> {
    runtime()
        .block_on(read_rows(Body::from(body.to_vec()), limit, csv, snapshot))
        .map(|rows| rows.len())
        .map_err(|e| e.message)
}

/// Reads and checks a directory export (`POST /v1/users/restore`): the number of buckets and
/// of pins.
///
/// # Errors
///
/// The route's 400 or 413 message.
pub fn decode_restore(
    snapshot: &Snapshot,
    body: &[u8],
    limit: usize,
) -> Result<(usize, usize), String> {
    runtime()
        .block_on(read_export(Body::from(body.to_vec()), limit, snapshot))
        .map(|export| (export.buckets.len(), export.pins.len()))
        .map_err(|e| e.message)
}

/// The current-thread runtime the decoders' streams are read on (a body in memory never
/// waits).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime without I/O or timers")
    })
}
