//! Import rows: a streamed line reader with line numbers and a size limit, and the pin rows of
//! an import, as JSON lines or CSV, each checked.

use axum::body::Body;
use serde::Deserialize;
use tokio_stream::StreamExt;

use crate::directory::check_user_id;
use crate::dns::Snapshot;
use crate::store::StoredPlacement;

use super::super::error::ApiError;
use super::placement;

/// Most row errors listed in one refused import.
pub(super) const MAX_ROW_ERRORS: usize = 100;
/// The optional first line of a CSV import.
const CSV_HEADER: [&str; 3] = ["user", "home", "replica"];
/// The UTF-8 encoding of U+FEFF, the byte order mark.
const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// Longest line of an import or restore, in bytes. A row is a user id (at most 256 bytes,
/// quoted or escaped at most a few times over) and two datacenter names, so 64 KiB is far beyond
/// any valid row; it bounds what one line can make the server buffer.
pub(super) const MAX_LINE_BYTES: usize = 64 * 1024;

/// The 413 for line `number`, longer than [`MAX_LINE_BYTES`]; nothing is imported.
fn line_too_long(number: usize) -> ApiError {
    ApiError {
        message: format!(
            "line {number} is longer than {MAX_LINE_BYTES} bytes; nothing was imported"
        ),
        ..ApiError::payload_too_large(MAX_LINE_BYTES)
    }
}

/// Streams `body` line by line into `line`, with 1-based line numbers; stops at `limit` bytes,
/// and at a line longer than [`MAX_LINE_BYTES`] (without buffering the rest of it).
pub(super) async fn for_each_line(
    body: Body,
    limit: usize,
    mut line: impl FnMut(usize, &str),
) -> Result<(), ApiError> {
    let mut stream = body.into_data_stream();
    let mut pending: Vec<u8> = Vec::new();
    let (mut read, mut number) = (0usize, 0usize);
    let mut handle = |bytes: &[u8], number: &mut usize| {
        *number += 1;
        // A UTF-8 byte order mark (as spreadsheet exports write) starts the body; it is not data.
        let bytes = match *number {
            1 => bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes),
            _ => bytes,
        };
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
            if end > MAX_LINE_BYTES {
                return Err(line_too_long(number + 1));
            }
            handle(&pending[start..start + end], &mut number);
            start += end + 1;
        }
        pending.drain(..start);
        if pending.len() > MAX_LINE_BYTES {
            return Err(line_too_long(number + 1));
        }
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
pub(in crate::control) async fn read_rows(
    body: Body,
    limit: usize,
    csv: bool,
    snapshot: &Snapshot,
) -> Result<Vec<(String, StoredPlacement)>, ApiError> {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for_each_line(body, limit, |number, line| {
        let parsed = if csv {
            let fields = parse_csv(line);
            // A CSV header line is allowed first.
            if number == 1 && fields.as_deref().is_ok_and(|f| f == CSV_HEADER) {
                return;
            }
            fields.and_then(|fields| match <[String; 3]>::try_from(fields) {
                Ok([user, home, replica]) => Ok(PinRow {
                    user,
                    home,
                    replica,
                }),
                Err(fields) => Err(format!(
                    "expected 3 fields (user,home,replica), found {}",
                    fields.len()
                )),
            })
        } else {
            serde_json::from_str::<PinRow>(line).map_err(|e| e.to_string())
        };
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

/// Parses one CSV record (RFC 4180: plain or double-quoted fields, `""` for a quote inside
/// one) with the `csv` crate. Records are read line by line, so that every problem names its
/// line; a user id cannot hold a line break, so no record spans two lines.
fn parse_csv(line: &str) -> Result<Vec<String>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(line.as_bytes());
    let mut record = csv::StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(true) => Ok(record.iter().map(str::to_owned).collect()),
        Ok(false) => Err("no fields".to_owned()),
        Err(error) => Err(error.to_string()),
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
        assert_eq!(parse_csv("a,b").unwrap().len(), 2);
    }
}
