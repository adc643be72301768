//! `GET /v1/fleet`: the instances sharing this instance's state, each with the revision it
//! serves, so an operator sees at a glance whether the fleet agrees.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, ControlState};

/// The fleet as this instance sees it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FleetView {
    /// `embedded` (this instance alone) or `etcd`.
    backend: &'static str,
    /// This instance's name in the fleet (empty with the embedded store).
    instance: String,
    /// The state revision this instance serves (0 with the embedded store).
    revision: i64,
    /// Every instance registered now (each under a lease that expires a few seconds after it
    /// stops), by name; with the embedded store, none.
    instances: Vec<InstanceView>,
    /// Whether every registered instance serves the same revision as this one.
    agreed: bool,
}

/// One registered instance.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct InstanceView {
    /// Its name: host, process and a counter.
    instance: String,
    /// Its configured identity (NSID, `id.server`).
    identity: String,
    /// The state revision it serves.
    revision: i64,
    /// When it last updated its record, Unix milliseconds on its own clock.
    updated_unix_ms: u64,
}

/// The instances sharing this state and the revisions they serve.
#[utoipa::path(get, path = "/v1/fleet",
    responses(
        (status = 200, description = "the fleet's instances and their revisions", body = FleetView),
        (status = 503, description = "etcd cannot be reached to list the instances", body = super::error::ErrorBody)))]
pub(crate) async fn get_fleet(
    State(state): State<ControlState>,
) -> Result<Json<FleetView>, ApiError> {
    let revision = state.shared.load().live.revision;
    let Some(fleet) = &state.fleet else {
        return Ok(Json(FleetView {
            backend: "embedded",
            instance: String::new(),
            revision,
            instances: Vec::new(),
            agreed: true,
        }));
    };
    let instances = fleet.instances().await.map_err(|error| {
        ApiError::unavailable(format!("cannot list the fleet's instances: {error}"))
    })?;
    let instances: Vec<InstanceView> = instances
        .into_iter()
        .map(|i| InstanceView {
            instance: i.instance,
            identity: i.identity,
            revision: i.revision,
            updated_unix_ms: i.updated_unix_ms,
        })
        .collect();
    Ok(Json(FleetView {
        backend: "etcd",
        instance: fleet.instance().to_owned(),
        revision,
        agreed: instances.iter().all(|i| i.revision == revision),
        instances,
    }))
}
