//! Datacenters over HTTP: reports pushed by their agents, their state as judged now, and drains
//! (per datacenter and service, and of this whole instance).

// utoipa's `#[utoipa::path]` expands `Query<T>` parameters with a path the lint flags.
#![allow(unused_qualifications)]

use std::collections::BTreeMap;
use std::time::SystemTime;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::dns::Snapshot;
use crate::routing::{DcState, DcStatus, ServiceId, Standing, Toggle, slow_start};
use crate::state::unix_ms;
use crate::store::{Change, DrainKey, StoredReport};

use super::ControlState;
use super::auth::Need;
use super::error::ApiError;
use super::extract::{Path, Query};
use super::simulate::drain_overloads;
use super::write::{Accepted, Whole, admit, applied, audit, read_json};

/// Longest report TTL accepted: a day.
const MAX_REPORT_TTL_SECONDS: u32 = 86_400;
/// Most latency regions in one report.
const MAX_LATENCY_REGIONS: usize = 512;

/// A datacenter's health and capacity report.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReportBody {
    /// Whether the datacenter can serve.
    healthy: bool,
    /// Capacity, in the datacenter's own units (≥ 0).
    #[schema(minimum = 0)]
    capacity: f64,
    /// Current load, in the same units (≥ 0).
    #[schema(minimum = 0)]
    load: f64,
    /// How long this report stays fresh, 1 to 86400 (`MAX_REPORT_TTL_SECONDS`); default
    /// `control.report_ttl_seconds`.
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 86400)]
    ttl_seconds: Option<Whole<u32>>,
    /// Measured latency (≥ 0) by client region: an ISO country code or a continent code, at most
    /// 512 (`MAX_LATENCY_REGIONS`).
    #[schema(schema_with = latency_schema)]
    latency_ms: Option<BTreeMap<String, f64>>,
    /// Relative cost of serving from here (≥ 0).
    #[schema(minimum = 0)]
    cost: Option<f64>,
    /// The datacenter's own service latency (p99), milliseconds (≥ 0); services with
    /// `max_service_latency_ms` skip it above that.
    #[schema(minimum = 0)]
    service_latency_ms: Option<f64>,
}

/// The schema of `ReportBody::latency_ms`: what `validate_report` accepts.
fn latency_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::Object,
            Type::Null,
        ]))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[A-Za-z]{2}$")),
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .minimum(Some(0.0))
                .into(),
        )))
        .max_properties(Some(MAX_LATENCY_REGIONS))
        .build()
}

/// Drain or undrain options.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DrainBody {
    /// Only this service (by its id); default every service.
    service: Option<String>,
    /// Drain even if a service would be left with no eligible datacenter, or another
    /// datacenter would be pushed past its high watermark.
    #[serde(default)]
    force: bool,
}

/// Query parameters of a drain: `?force=true` does what the body's `force` does, for callers
/// that send no body.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub(crate) struct DrainParams {
    /// Drain even past the safety rails, as the body's `force`; either one forces.
    #[serde(default)]
    force: bool,
}

/// One datacenter's state.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DatacenterView {
    name: String,
    country: String,
    continent: String,
    /// `fresh`, `stale`, `unreported`.
    freshness: &'static str,
    /// The latest report says healthy (absent: never reported).
    healthy: Option<bool>,
    capacity: Option<f64>,
    load: Option<f64>,
    /// load / capacity.
    utilization: Option<f64>,
    report_age_seconds: Option<f64>,
    ttl_seconds: Option<u32>,
    /// Restored after a restart and not yet confirmed by a fresh report.
    unverified: bool,
    /// The state store cannot write, so reports are refused (503) and routing keeps the state
    /// last published: this view is that state, judged as of when it was published, so no
    /// datacenter turns stale because of our own failure.
    frozen: bool,
    /// Drained for every service.
    drained: bool,
    /// Drained for these services only.
    drained_services: Vec<String>,
    /// Standing for each service using it: `healthy`, `unreported`, `stale`, `drained`,
    /// `down`, `stale-past-grace`, `no-report`.
    services: BTreeMap<String, String>,
    /// The state revision this view reflects: with etcd, the revision of the last change this
    /// instance applied (equal on every instance of a fleet that agrees); 0 with the embedded
    /// store.
    state_revision: i64,
    /// The service latency (p99, milliseconds) of the latest report, if it has one.
    service_latency_ms: Option<f64>,
    /// Services in which the datacenter is taking back its clients, by service identifier.
    slow_start: BTreeMap<String, SlowStartView>,
}

/// Where a datacenter is in one service's slow start.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SlowStartView {
    /// The share of its clients it serves now, 0 to 1 (in steps of 1/20).
    share: f64,
    /// The whole ramp, seconds (`slow_start_seconds`).
    seconds: u64,
    /// Seconds since it became eligible again.
    elapsed_seconds: f64,
}

/// Accept a datacenter's report.
#[utoipa::path(put, path = "/v1/datacenters/{dc}/report", request_body = ReportBody,
    params(("dc" = String, Path, description = "datacenter name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "stored and published: DNS answers follow the report", body = Accepted),
        (status = 404, description = "no such datacenter", body = super::error::ErrorBody),
        (status = 500, description = "the state store could not write the change", body = super::error::ErrorBody),
        (status = 503, description = "read-only: the state store cannot write; or the server is shutting down", body = super::error::ErrorBody)))]
pub(crate) async fn put_report(
    State(state): State<ControlState>,
    Path(dc): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Accepted>, ApiError> {
    let snapshot = state.shared.load();
    let caller = admit(&state, &snapshot, &headers, Need::ReportFor(&dc))?;
    let config = &snapshot.loaded.config;
    if config.datacenter_index(&dc).is_none() {
        return Err(ApiError::not_found(format!("no datacenter {dc:?}")));
    }
    let body: ReportBody = read_json(body, config.control.body_limit, None).await?;
    let report = validate_report(
        &body,
        config.control.report_ttl.as_secs() as u32,
        state.clock.now(),
    )?;
    let detail = serde_json::to_value(&report).unwrap_or_default();
    let change = Change::Report {
        datacenter: dc.clone(),
        report,
    };
    let entry = audit(&caller, "report", &dc, detail, state.clock.now());
    applied(
        state.handle.apply(change, entry, false).await,
        "report",
        &dc,
    )
}

pub(super) fn validate_report(
    body: &ReportBody,
    default_ttl: u32,
    now: SystemTime,
) -> Result<StoredReport, ApiError> {
    let finite = |name: &str, value: f64| {
        if value.is_finite() && value >= 0.0 {
            Ok(value)
        } else {
            Err(ApiError::bad_request(format!(
                "{name}: {value} is not a finite number ≥ 0"
            )))
        }
    };
    let capacity = finite("capacity", body.capacity)?;
    let load = finite("load", body.load)?;
    let cost = body.cost.map(|c| finite("cost", c)).transpose()?;
    let service_latency_ms = body
        .service_latency_ms
        .map(|ms| finite("service_latency_ms", ms))
        .transpose()?;
    let ttl_seconds = body.ttl_seconds.map_or(default_ttl, |Whole(ttl)| ttl);
    if !(1..=MAX_REPORT_TTL_SECONDS).contains(&ttl_seconds) {
        return Err(ApiError::bad_request(format!(
            "ttl_seconds: {ttl_seconds} is not between 1 and {MAX_REPORT_TTL_SECONDS}"
        )));
    }
    let mut latency_ms = BTreeMap::new();
    if let Some(latency) = &body.latency_ms {
        if latency.len() > MAX_LATENCY_REGIONS {
            return Err(ApiError::bad_request(format!(
                "latency_ms: {} regions, at most {MAX_LATENCY_REGIONS}",
                latency.len()
            )));
        }
        for (region, &ms) in latency {
            let valid_region = region.len() == 2 && region.bytes().all(|b| b.is_ascii_alphabetic());
            if !valid_region {
                return Err(ApiError::bad_request(format!(
                    "latency_ms: {region:?} is not a country or continent code"
                )));
            }
            latency_ms.insert(
                region.to_ascii_uppercase(),
                finite(&format!("latency_ms.{region}"), ms)?,
            );
        }
    }
    Ok(StoredReport {
        healthy: body.healthy,
        capacity,
        load,
        ttl_seconds,
        latency_ms,
        cost,
        received_unix_ms: unix_ms(now),
        service_latency_ms,
        // The state manager sets it from the previous report.
        serving_since_unix_ms: None,
    })
}

/// Every datacenter's state.
#[utoipa::path(get, path = "/v1/datacenters",
    responses((status = 200, description = "every datacenter, in configuration order", body = [DatacenterView])))]
pub(crate) async fn list_datacenters(
    State(state): State<ControlState>,
) -> Json<Vec<DatacenterView>> {
    let snapshot = state.shared.load();
    let config = &snapshot.loaded.config;
    // Every datacenter's state at one instant, computed once for the whole list.
    let (at, frozen) = judged_at(&state, &snapshot);
    let states = snapshot.live.dc_states(config, at);
    let views = (0..config.datacenters.len())
        .map(|index| datacenter_view(&snapshot, index, &states[index], frozen))
        .collect();
    Json(views)
}

/// The instant datacenters are judged at in a view, and whether that is frozen: now, or while
/// the store cannot write, the instant the serving snapshot was built (what routing uses).
fn judged_at(state: &ControlState, snapshot: &Snapshot) -> (std::time::SystemTime, bool) {
    if state.readiness.store_failing() {
        (snapshot.built_at, true)
    } else {
        (state.clock.now(), false)
    }
}

/// One datacenter's state.
#[utoipa::path(get, path = "/v1/datacenters/{dc}", params(("dc" = String, Path, description = "datacenter name")),
    responses((status = 200, description = "the datacenter's state", body = DatacenterView),
        (status = 404, description = "no such datacenter", body = super::error::ErrorBody)))]
pub(crate) async fn get_datacenter(
    State(state): State<ControlState>,
    Path(dc): Path<String>,
) -> Result<Json<DatacenterView>, ApiError> {
    let snapshot = state.shared.load();
    let Some(index) = snapshot.loaded.config.datacenter_index(&dc) else {
        return Err(ApiError::not_found(format!("no datacenter {dc:?}")));
    };
    let (at, frozen) = judged_at(&state, &snapshot);
    let states = snapshot.live.dc_states(&snapshot.loaded.config, at);
    Ok(Json(datacenter_view(
        &snapshot,
        index,
        &states[index],
        frozen,
    )))
}

/// The view of datacenter `index` in `state` (its entry of `LiveState::dc_states`).
fn datacenter_view(
    snapshot: &Snapshot,
    index: usize,
    state: &DcState,
    frozen: bool,
) -> DatacenterView {
    let config = &snapshot.loaded.config;
    let dc = &config.datacenters[index];
    let report = state.report.as_ref();
    let freshness = DcStatus::freshness(state).label();
    let services = config
        .services
        .iter()
        .enumerate()
        .filter(|(_, s)| s.pools.iter().any(|p| p.datacenter == index))
        .map(|(i, s)| {
            let standing = Standing::of(dc, state, ServiceId(i as u16), s);
            (s.id.clone(), standing.label().to_owned())
        })
        .collect();
    let slow_start = config
        .services
        .iter()
        .enumerate()
        .filter(|(_, s)| s.pools.iter().any(|p| p.datacenter == index))
        .filter_map(|(i, s)| {
            let id = ServiceId(i as u16);
            let on = snapshot.live.toggles.is_on(Toggle::SlowStart);
            if !on || !Standing::of(dc, state, id, s).is_eligible() {
                return None;
            }
            let (ramp, elapsed) = slow_start(s, id, state)?;
            let view = SlowStartView {
                share: ramp.share(),
                seconds: ramp.over.as_secs(),
                elapsed_seconds: elapsed.as_secs_f64(),
            };
            Some((s.id.clone(), view))
        })
        .collect();
    DatacenterView {
        name: dc.name.clone(),
        country: dc.country.to_string(),
        continent: dc.continent.to_string(),
        freshness,
        healthy: report.map(|r| r.healthy),
        capacity: report.map(|r| r.capacity),
        load: report.map(|r| r.load),
        utilization: report.map(|r| r.utilization()).filter(|u| u.is_finite()),
        report_age_seconds: report.map(|r| r.age.as_secs_f64()),
        ttl_seconds: report.map(|r| r.ttl.as_secs() as u32),
        unverified: state.unverified,
        frozen,
        drained: state.drained,
        drained_services: state
            .drained_services
            .iter()
            .map(|s| config.services[usize::from(s.0)].id.clone())
            .collect(),
        services,
        state_revision: snapshot.live.revision,
        service_latency_ms: report.and_then(|r| r.service_latency_ms),
        slow_start,
    }
}

/// Drain a datacenter (for one service or all).
#[utoipa::path(post, path = "/v1/datacenters/{dc}/drain", request_body = Option<DrainBody>,
    params(("dc" = String, Path, description = "datacenter name"), DrainParams), security(("bearer" = [])),
    responses(
        (status = 200, description = "stored and published: DNS answers avoid the datacenter", body = Accepted),
        (status = 404, description = "no such datacenter or service", body = super::error::ErrorBody),
        (status = 409, description = "would leave a service with no eligible datacenter, or by the recorded traffic push another datacenter past its high watermark (then the body has the simulation); `force` (in the body or the query) overrides", body = super::simulate::DrainConflict),
        (status = 500, description = "the state store could not write the change", body = super::error::ErrorBody),
        (status = 503, description = "read-only: the state store cannot write; or the server is shutting down", body = super::error::ErrorBody)))]
pub(crate) async fn drain(
    State(state): State<ControlState>,
    Path(dc): Path<String>,
    Query(params): Query<DrainParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    set_drain(state, dc, headers, body, Some(params)).await
}

/// Lift a datacenter's drain.
#[utoipa::path(post, path = "/v1/datacenters/{dc}/undrain", request_body = Option<DrainBody>,
    params(("dc" = String, Path, description = "datacenter name")), security(("bearer" = [])),
    responses(
        (status = 200, description = "stored and published: the drain is lifted", body = Accepted),
        (status = 404, description = "no such datacenter or service", body = super::error::ErrorBody),
        (status = 500, description = "the state store could not write the change", body = super::error::ErrorBody),
        (status = 503, description = "read-only: the state store cannot write; or the server is shutting down", body = super::error::ErrorBody)))]
pub(crate) async fn undrain(
    State(state): State<ControlState>,
    Path(dc): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    set_drain(state, dc, headers, body, None).await
}

/// Drains `dc` (with the drain's query parameters) or, with `None`, lifts its drain.
async fn set_drain(
    state: ControlState,
    dc: String,
    headers: HeaderMap,
    body: Body,
    drain: Option<DrainParams>,
) -> Result<Response, ApiError> {
    let drained = drain.is_some();
    let snapshot = state.shared.load();
    let caller = admit(&state, &snapshot, &headers, Need::Operator)?;
    let config = &snapshot.loaded.config;
    if config.datacenter_index(&dc).is_none() {
        return Err(ApiError::not_found(format!("no datacenter {dc:?}")));
    }
    let mut body: DrainBody =
        read_json(body, config.control.body_limit, Some(DrainBody::default())).await?;
    body.force |= drain.is_some_and(|params| params.force);
    if let Some(service) = &body.service
        && !config.services.iter().any(|s| s.id == *service)
    {
        return Err(ApiError::not_found(format!("no service {service:?}")));
    }
    // The capacity rail: replay the recorded traffic with the drain made, and refuse a drain
    // that would push another datacenter past its high watermark.
    if drained
        && !body.force
        && let Some(conflict) =
            drain_overloads(&state, snapshot.clone(), &dc, body.service.as_deref()).await?
    {
        return Ok((StatusCode::CONFLICT, Json(conflict)).into_response());
    }
    let action = if drained { "drain" } else { "undrain" };
    let target = match &body.service {
        Some(service) => format!("{dc}/{service}"),
        None => dc.clone(),
    };
    let change = Change::Drain {
        key: DrainKey {
            datacenter: dc,
            service: body.service.clone(),
        },
        drained,
    };
    let detail = serde_json::json!({ "service": body.service, "force": body.force });
    let entry = audit(&caller, action, &target, detail, state.clock.now());
    applied(
        state.handle.apply(change, entry, body.force).await,
        action,
        &target,
    )
    .map(IntoResponse::into_response)
}

/// Drain this instance: `/readyz` fails until undrained.
#[utoipa::path(post, path = "/v1/drain", security(("bearer" = [])),
    responses(
        (status = 200, description = "stored: `/readyz` now fails", body = Accepted),
        (status = 500, description = "the state store could not write the change", body = super::error::ErrorBody),
        (status = 503, description = "read-only: the state store cannot write; or the server is shutting down", body = super::error::ErrorBody)))]
pub(crate) async fn drain_instance(
    State(state): State<ControlState>,
    headers: HeaderMap,
) -> Result<Json<Accepted>, ApiError> {
    set_instance_drain(state, headers, true).await
}

/// Undrain this instance.
#[utoipa::path(post, path = "/v1/undrain", security(("bearer" = [])),
    responses(
        (status = 200, description = "stored: `/readyz` answers 200 again", body = Accepted),
        (status = 500, description = "the state store could not write the change", body = super::error::ErrorBody),
        (status = 503, description = "read-only: the state store cannot write; or the server is shutting down", body = super::error::ErrorBody)))]
pub(crate) async fn undrain_instance(
    State(state): State<ControlState>,
    headers: HeaderMap,
) -> Result<Json<Accepted>, ApiError> {
    set_instance_drain(state, headers, false).await
}

async fn set_instance_drain(
    state: ControlState,
    headers: HeaderMap,
    drained: bool,
) -> Result<Json<Accepted>, ApiError> {
    let snapshot = state.shared.load();
    let caller = admit(&state, &snapshot, &headers, Need::Operator)?;
    let action = if drained {
        "drain-instance"
    } else {
        "undrain-instance"
    };
    let entry = audit(
        &caller,
        action,
        "instance",
        serde_json::Value::Null,
        state.clock.now(),
    );
    applied(
        state
            .handle
            .apply(Change::InstanceDrain { drained }, entry, true)
            .await,
        action,
        "instance",
    )
}
