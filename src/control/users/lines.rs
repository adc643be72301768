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

/// Longest line of an import or restore, in bytes. A row is a user id (at most 256 bytes,
/// quoted or escaped at most a few times over) and two datacenter names, so 64 KiB is far beyond
/// any valid row; it bounds what one line can make the server buffer.
pub(super) const MAX_LINE_BYTES: usize = 64 * 1024;

/// The 413 for line `number`, longer than [`MAX_LINE_BYTES`]; nothing is imported.
fn line_too_long(number: usize) -> ApiError {
    ApiError {
        status: axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        code: "payload_too_large",
        message: format!(
            "line {number} is longer than {MAX_LINE_BYTES} bytes; nothing was imported"
        ),
        retry_after: None,
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
pub(super) async fn read_rows(
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
