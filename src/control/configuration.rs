//! Configuration over HTTP: reload (as SIGHUP does), the running configuration and its version,
//! every version this server has run, and the diff between two.
//!
//! Every route here is operator-only, and no response carries a token hash: the configuration's
//! text (and each side of a diff) has every SHA-256 in it replaced by [`REDACTED`] before it
//! leaves, so a leaked response cannot be used to guess tokens offline.

// utoipa's `#[utoipa::path]` expands `Query<T>` parameters with a path the lint flags.
#![allow(unused_qualifications)]

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::dns::Snapshot;
use crate::state::ETCD_PROBLEM_PATH;
use crate::store::ConfigVersion;

use super::ControlState;
use super::auth::Need;
use super::error::{ApiError, invalid_configuration};
use super::extract::Query;
use super::write::{admit, audit, store_read_failed};

/// What a token hash is replaced with in every response.
pub(crate) const REDACTED: &str = "<redacted>";

/// The running configuration.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConfigView {
    /// Hex SHA-256 of the text and the zone files it names.
    version: String,
    generation: u64,
    text: String,
}

/// A known configuration version.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct VersionView {
    version: String,
    first_seen_unix_ms: u64,
    running: bool,
}

/// Query parameters of `/v1/config/diff`.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct DiffParams {
    /// The older version.
    from: String,
    /// The newer version; default the running one.
    to: Option<String>,
}

/// Reload configuration, zones and geo database (as SIGHUP does). With the etcd backend the
/// configuration and zones are published to the fleet, and this answers once this instance
/// serves them (every instance loads them through its watch).
#[utoipa::path(post, path = "/v1/reload", security(("bearer" = [])),
    responses((status = 200, description = "reloaded: the configuration now serving", body = ConfigView),
        (status = 422, body = super::error::ErrorBody,
        description = "the configuration is invalid (every problem in `problems`); the previous one keeps serving"),
        (status = 503, body = super::error::ErrorBody, description = "read-only: the state store cannot write, or the fleet's etcd could not take the new version")))]
pub(crate) async fn reload(
    State(state): State<ControlState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let snapshot = state.shared.load();
    let caller = admit(&state, &snapshot, &headers, Need::Operator)?;
    let entry = audit(
        &caller,
        "reload",
        "configuration",
        serde_json::Value::Null,
        state.clock.now(),
    );
    match state.handle.reload_as(Some(entry)).await {
        Ok(_) => {
            let snapshot = state.shared.load();
            Ok(Json(config_view(&snapshot)).into_response())
        }
        // etcd could not take the version (or give it back): the configuration is not at
        // fault, and every instance keeps serving what it served.
        Err(error)
            if !error.problems.is_empty()
                && error.problems.iter().all(|p| p.path == ETCD_PROBLEM_PATH) =>
        {
            let messages: Vec<&str> = error.problems.iter().map(|p| p.message.as_str()).collect();
            Err(ApiError::read_only(messages.join("; ")))
        }
        Err(error) => Ok(invalid_configuration(&error.problems)),
    }
}

fn config_view(snapshot: &Snapshot) -> ConfigView {
    ConfigView {
        version: snapshot.loaded.config_version.clone(),
        generation: snapshot.generation,
        text: redact_hashes(&snapshot.loaded.config_text),
    }
}

/// `text` with every SHA-256 in hex (a run of exactly 64 hex digits, the form token hashes
/// take) replaced by [`REDACTED`].
pub(crate) fn redact_hashes(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut res = String::with_capacity(text.len());
    let (mut copied, mut i) = (0, 0);
    while i < bytes.len() {
        if !bytes[i].is_ascii_hexdigit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
            i += 1;
        }
        let word = &bytes[start..i];
        let after_word_char = start > 0 && (bytes[start - 1].is_ascii_alphanumeric());
        if word.len() == 64 && !after_word_char && word.iter().all(u8::is_ascii_hexdigit) {
            res.push_str(&text[copied..start]);
            res.push_str(REDACTED);
            copied = i;
        }
    }
    res.push_str(&text[copied..]);
    res
}

/// The running configuration and its version, token hashes redacted (operator).
#[utoipa::path(get, path = "/v1/config", security(("bearer" = [])),
    responses((status = 200, description = "the configuration now serving", body = ConfigView)))]
pub(crate) async fn get_config(
    State(state): State<ControlState>,
    headers: HeaderMap,
) -> Result<Json<ConfigView>, ApiError> {
    let snapshot = state.shared.load();
    admit(&state, &snapshot, &headers, Need::Operator)?;
    Ok(Json(config_view(&snapshot)))
}

/// Every configuration version this server has run (operator).
#[utoipa::path(get, path = "/v1/config/versions", security(("bearer" = [])),
    responses((status = 200, description = "every version, oldest first", body = [VersionView]),
        (status = 500, description = "the state store could not be read", body = super::error::ErrorBody),
        (status = 503, description = "the state store cannot be read now (I/O error)", body = super::error::ErrorBody)))]
pub(crate) async fn config_versions(
    State(state): State<ControlState>,
    headers: HeaderMap,
) -> Result<Json<Vec<VersionView>>, ApiError> {
    let snapshot = state.shared.load();
    admit(&state, &snapshot, &headers, Need::Operator)?;
    let running = snapshot.loaded.config_version.clone();
    let store = state.store.clone();
    let versions = tokio::task::spawn_blocking(move || store.config_versions())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| store_read_failed("configuration versions", &e))?;
    Ok(Json(
        versions
            .into_iter()
            .map(|v| VersionView {
                running: v.hash == running,
                version: v.hash,
                first_seen_unix_ms: v.first_seen_unix_ms,
            })
            .collect(),
    ))
}

/// A unified diff between two configuration versions: the configuration (token hashes
/// redacted), then each zone file (operator).
#[utoipa::path(get, path = "/v1/config/diff", params(DiffParams), security(("bearer" = [])),
    responses((status = 200, description = "a unified diff", body = String, content_type = "text/plain"),
        (status = 404, description = "no such configuration version", body = super::error::ErrorBody),
        (status = 500, description = "the state store could not be read", body = super::error::ErrorBody),
        (status = 503, description = "the state store cannot be read now (I/O error)", body = super::error::ErrorBody)))]
pub(crate) async fn config_diff(
    State(state): State<ControlState>,
    headers: HeaderMap,
    Query(params): Query<DiffParams>,
) -> Result<Response, ApiError> {
    let snapshot = state.shared.load();
    admit(&state, &snapshot, &headers, Need::Operator)?;
    let to_version = params
        .to
        .unwrap_or_else(|| snapshot.loaded.config_version.clone());
    let store = state.store.clone();
    let (from_hash, to_hash) = (params.from.clone(), to_version.clone());
    let (from, to) = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::store::StoreError>((
            store.config_version(&from_hash)?,
            store.config_version(&to_hash)?,
        ))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| store_read_failed("configuration versions", &e))?;
    let from = from.ok_or_else(|| {
        ApiError::not_found(format!("no configuration version {:?}", params.from))
    })?;
    let to =
        to.ok_or_else(|| ApiError::not_found(format!("no configuration version {to_version:?}")))?;
    let diff = diff_versions(&from, &to);
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], diff).into_response())
}

/// The unified diff between two versions: the configuration, then each zone file that changed,
/// each with a `---`/`+++` header naming the file and the version. A file only one version has
/// is compared with nothing.
fn diff_versions(from: &ConfigVersion, to: &ConfigVersion) -> String {
    let file_text = |version: &ConfigVersion, name: &str| -> String {
        version
            .files
            .iter()
            .find(|file| file.name == name)
            .map(|file| file.text.clone())
            .unwrap_or_default()
    };
    let mut names: Vec<&str> = from.files.iter().map(|file| file.name.as_str()).collect();
    for file in &to.files {
        if !names.contains(&file.name.as_str()) {
            names.push(&file.name);
        }
    }
    let mut res = unified(
        &redact_hashes(&from.text),
        &redact_hashes(&to.text),
        &format!("configuration {}", from.hash),
        &format!("configuration {}", to.hash),
    );
    for name in names {
        res.push_str(&unified(
            &file_text(from, name),
            &file_text(to, name),
            &format!("{name} {}", from.hash),
            &format!("{name} {}", to.hash),
        ));
    }
    res
}

/// A unified diff of two texts; empty when they are equal.
fn unified(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .header(old_name, new_name)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::{REDACTED, redact_hashes};

    #[test]
    fn every_sha256_is_redacted_and_nothing_else() {
        let hash = "cadaee6d96cfc6f48b78f8783c9493f48be29ff3e90ac85c219f014cb73b1eae";
        let text = format!(
            "tokens:\n  - {{ name: a, sha256: {hash} }}\n  - sha256: \"{}\"\n# {hash}\nx: {hash}0\n",
            hash.to_uppercase()
        );
        let redacted = redact_hashes(&text);
        assert_eq!(
            redacted,
            format!(
                "tokens:\n  - {{ name: a, sha256: {REDACTED} }}\n  - sha256: \"{REDACTED}\"\n# {REDACTED}\nx: {hash}0\n"
            )
        );
        assert_eq!(redact_hashes("plain text, ünïcode"), "plain text, ünïcode");
    }
}
