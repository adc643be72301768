//! The directory export format: a header line, every bucket in order, every pin, as JSON lines.
//!
//! `export` streams it out from an immutable directory without holding it whole in memory;
//! `read_export` reads it back, checking every line, for a restore.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio_stream::wrappers::ReceiverStream;

use crate::directory::check_user_id;
use crate::dns::Snapshot;
use crate::store::StoredPlacement;

use super::super::ControlState;
use super::super::auth::Need;
use super::super::error::ApiError;
use super::super::write::admit;
use super::lines::{MAX_ROW_ERRORS, for_each_line};
use super::{placement, view};

/// Bytes per chunk of a streamed export.
const EXPORT_CHUNK: usize = 64 * 1024;

/// Export the whole directory as JSON lines: a header, every bucket, every pin.
#[utoipa::path(get, path = "/v1/directory/export", security(("bearer" = [])),
    responses((status = 200, description = "every bucket and pin, one JSON object per line", body = String, content_type = "application/x-ndjson"),
        (status = 404, description = "no user directory is configured", body = super::super::error::ErrorBody)))]
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
            let (home, replica) = directory.names(directory.bucket(b));
            chunk.push_str(
                &serde_json::json!({ "bucket": b, "home": home, "replica": replica }).to_string(),
            );
            chunk.push('\n');
            if chunk.len() >= EXPORT_CHUNK && !send(&mut chunk) {
                return;
            }
        }
        for (user, p) in directory.pins() {
            let (home, replica) = directory.names(p);
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

/// A parsed export.
pub(in crate::control) struct Export {
    pub(in crate::control) n_buckets: u32,
    pub(in crate::control) buckets: Vec<StoredPlacement>,
    pub(in crate::control) pins: Vec<(String, StoredPlacement)>,
}

/// Reads an export (header, buckets in order, pins), checking every line.
pub(in crate::control) async fn read_export(
    body: Body,
    limit: usize,
    snapshot: &Snapshot,
) -> Result<Export, ApiError> {
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
