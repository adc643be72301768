//! Banned queries: `GET /v1/banned` lists the rules with their match counts, `POST /v1/banned`
//! adds one, `DELETE /v1/banned/{id}` removes one.
//!
//! A rule is a state change like a drain: checked here, then stored with its audit entry and
//! published by the state manager before the handler answers. Its id is derived from its
//! content (the first 12 hex digits of the SHA-256 of its stored JSON), so posting the same rule
//! twice keeps one. Matching is [`crate::state::Banned`], at the entry of every DNS query.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::dns::{qtype_code, qtype_name};
use crate::state::BanRule;
use crate::store::{Change, StoredBan};

use super::ControlState;
use super::auth::Need;
use super::error::ApiError;
use super::extract::Path;
use super::write::{Accepted, admit, applied, audit, read_json};

/// A rule as posted: a query matches when every part given matches.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BanBody {
    /// The exact query name, e.g. `x.example.com`.
    name: Option<String>,
    /// A name suffix: the name itself and every name below it.
    suffix: Option<String>,
    /// The query type: a name (`ANY`, `TXT`, `TYPE65`) or a number.
    qtype: Option<QtypeText>,
    /// Octets the message holds at `offset`.
    bytes: Option<BytesBody>,
    /// `drop` (no reply) or `refuse` (REFUSED); default `refuse`.
    action: Option<String>,
}

/// A byte pattern at an offset of the message.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BytesBody {
    /// Where the pattern starts, from the first octet of the message (the header's id is at
    /// 0); default 0.
    #[schema(minimum = 0, maximum = 65535)]
    offset: Option<u16>,
    /// The octets, two hexadecimal digits each, e.g. `0100`.
    hex: String,
}

/// A query type as JSON may give it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum QtypeText {
    /// By number.
    Number(u16),
    /// By name.
    Name(String),
}

/// A rule in force.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BanView {
    /// Its id, for `DELETE /v1/banned/{id}`.
    id: String,
    name: Option<String>,
    suffix: Option<String>,
    /// The query type's name.
    qtype: Option<String>,
    offset: Option<u16>,
    /// The octets at `offset`, in hexadecimal.
    hex: Option<String>,
    /// `drop` or `refuse`.
    action: &'static str,
    /// Queries it matched since this server started.
    matched: u64,
}

/// What `POST /v1/banned` did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BanAccepted {
    /// The rule's id.
    id: String,
    /// The snapshot generation now serving, which includes the rule.
    generation: u64,
}

fn view(rule: &BanRule) -> BanView {
    BanView {
        id: rule.id.clone(),
        name: rule.stored.name.clone(),
        suffix: rule.stored.suffix.clone(),
        qtype: rule.stored.qtype.map(qtype_name),
        offset: rule
            .stored
            .pattern
            .as_ref()
            .map(|_| rule.stored.offset.unwrap_or(0)),
        hex: rule.stored.pattern.clone(),
        action: rule.action.name(),
        matched: rule.counter.get(),
    }
}

/// Every banned-query rule in force, with its match count (operator).
#[utoipa::path(get, path = "/v1/banned", security(("bearer" = [])),
    responses((status = 200, description = "every rule in force", body = [BanView])))]
pub(crate) async fn list_banned(
    State(state): State<ControlState>,
    headers: HeaderMap,
) -> Result<Json<Vec<BanView>>, ApiError> {
    let snapshot = state.shared.load();
    admit(&state, &snapshot, &headers, Need::Operator)?;
    Ok(Json(
        snapshot.live.banned.rules().iter().map(view).collect(),
    ))
}

/// Ban matching queries: drop them or answer REFUSED, before any other work (operator).
#[utoipa::path(post, path = "/v1/banned", request_body = BanBody, security(("bearer" = [])),
    responses(
        (status = 200, description = "stored and published: matching queries are banned", body = BanAccepted),
        (status = 409, description = "as many rules as allowed (64) are in force", body = super::error::ErrorBody),
        (status = 500, description = "the state store could not write the change", body = super::error::ErrorBody),
        (status = 503, description = "read-only: the state store cannot write; or the server is shutting down", body = super::error::ErrorBody)))]
pub(crate) async fn ban(
    State(state): State<ControlState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BanAccepted>, ApiError> {
    let snapshot = state.shared.load();
    let caller = admit(&state, &snapshot, &headers, Need::Operator)?;
    let body: BanBody = read_json(body, snapshot.loaded.config.control.body_limit, None).await?;
    let qtype = match &body.qtype {
        None => None,
        Some(QtypeText::Number(code)) => Some(*code),
        Some(QtypeText::Name(name)) => Some(qtype_code(name).ok_or_else(|| {
            ApiError::bad_request(format!("qtype: {name:?} is not a record type"))
        })?),
    };
    let rule = StoredBan {
        name: body.name,
        suffix: body.suffix,
        qtype,
        offset: body.bytes.as_ref().map(|b| b.offset.unwrap_or(0)),
        pattern: body.bytes.map(|b| b.hex.to_ascii_lowercase()),
        action: body.action.unwrap_or_else(|| "refuse".to_owned()),
    };
    let id = rule_id(&rule);
    BanRule::compile(&id, &rule).map_err(|error| ApiError::bad_request(error.to_string()))?;
    let detail = serde_json::to_value(&rule).unwrap_or_default();
    let entry = audit(&caller, "ban", &id, detail, state.clock.now());
    let change = Change::Ban {
        id: id.clone(),
        rule,
    };
    let Json(accepted) = applied(state.handle.apply(change, entry, false).await, "ban", &id)?;
    Ok(Json(BanAccepted {
        id,
        generation: accepted.generation,
    }))
}

/// Remove a banned-query rule (operator).
#[utoipa::path(delete, path = "/v1/banned/{id}",
    params(("id" = String, Path, description = "the rule's id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "removed and published", body = Accepted),
        (status = 404, description = "no such rule", body = super::error::ErrorBody),
        (status = 500, description = "the state store could not write the change", body = super::error::ErrorBody),
        (status = 503, description = "read-only: the state store cannot write; or the server is shutting down", body = super::error::ErrorBody)))]
pub(crate) async fn unban(
    State(state): State<ControlState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Accepted>, ApiError> {
    let snapshot = state.shared.load();
    let caller = admit(&state, &snapshot, &headers, Need::Operator)?;
    if !snapshot.live.banned_rules.contains_key(&id) {
        return Err(ApiError::not_found(format!("no banned-query rule {id:?}")));
    }
    let entry = audit(
        &caller,
        "unban",
        &id,
        serde_json::Value::Null,
        state.clock.now(),
    );
    let change = Change::Unban { id: id.clone() };
    applied(state.handle.apply(change, entry, false).await, "unban", &id)
}

/// The id of `rule`: the first 12 hex digits of the SHA-256 of its JSON.
fn rule_id(rule: &StoredBan) -> String {
    let json = serde_json::to_vec(rule).unwrap_or_default();
    Sha256::digest(&json)
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}
