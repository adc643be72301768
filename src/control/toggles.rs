//! Feature toggles: `GET /v1/toggles` lists them, `PUT /v1/toggles/{name}` switches one.
//!
//! A switch is a state change like a drain: the state manager stores it with its audit entry,
//! publishes a snapshot built under the new toggles (decision maps rebuilt where they depend on
//! it), and only then does the handler answer; so a 200 means DNS answers by it. The toggles
//! themselves are [`crate::routing::Toggles`].

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::routing::Toggle;
use crate::store::Change;

use super::ControlState;
use super::auth::Need;
use super::error::ApiError;
use super::extract::Path;
use super::write::{Accepted, admit, applied, audit, read_json};

/// One feature toggle.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ToggleView {
    /// Its name, e.g. `capacity_spill`.
    name: &'static str,
    /// Whether it is on (every toggle is on until an operator switches it off).
    on: bool,
    /// What switching it off does.
    when_off: &'static str,
}

/// The body of `PUT /v1/toggles/{name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ToggleBody {
    /// `true` to switch it on, `false` to switch it off.
    on: bool,
}

/// Every feature toggle and whether it is on (operator).
#[utoipa::path(get, path = "/v1/toggles", security(("bearer" = [])),
    responses((status = 200, description = "every feature toggle", body = [ToggleView])))]
pub(crate) async fn list_toggles(
    State(state): State<ControlState>,
    headers: HeaderMap,
) -> Result<Json<Vec<ToggleView>>, ApiError> {
    let snapshot = state.shared.load();
    admit(&state, &snapshot, &headers, Need::Operator)?;
    let toggles = snapshot.live.toggles;
    Ok(Json(
        Toggle::ALL
            .into_iter()
            .map(|toggle| ToggleView {
                name: toggle.name(),
                on: toggles.is_on(toggle),
                when_off: toggle.when_off(),
            })
            .collect(),
    ))
}

/// Switch a feature toggle on or off (operator).
#[utoipa::path(put, path = "/v1/toggles/{name}", request_body = ToggleBody,
    params(("name" = String, Path, description = "the toggle's name")), security(("bearer" = [])),
    responses(
        (status = 200, description = "stored and published: DNS answers by it", body = Accepted),
        (status = 404, description = "no such toggle", body = super::error::ErrorBody),
        (status = 500, description = "the state store could not write the change", body = super::error::ErrorBody),
        (status = 503, description = "read-only: the state store cannot write; or the server is shutting down", body = super::error::ErrorBody)))]
pub(crate) async fn put_toggle(
    State(state): State<ControlState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Accepted>, ApiError> {
    let snapshot = state.shared.load();
    let caller = admit(&state, &snapshot, &headers, Need::Operator)?;
    let Some(toggle) = Toggle::named(&name) else {
        let known: Vec<&str> = Toggle::ALL.iter().map(|t| t.name()).collect();
        return Err(ApiError::not_found(format!(
            "no toggle {name:?}; the toggles are {}",
            known.join(", ")
        )));
    };
    let body: ToggleBody = read_json(body, snapshot.loaded.config.control.body_limit, None).await?;
    let action = if body.on { "toggle-on" } else { "toggle-off" };
    let entry = audit(
        &caller,
        action,
        toggle.name(),
        serde_json::json!({ "on": body.on }),
        state.clock.now(),
    );
    let change = Change::Toggle {
        name: toggle.name().to_owned(),
        on: body.on,
    };
    applied(
        state.handle.apply(change, entry, false).await,
        action,
        toggle.name(),
    )
}
