//! The control plane's handlers: reports, datacenter state, drains, explain, reload,
//! configuration versions, audit log.
//!
//! Every write authenticates (401), rate-limits (429) and authorizes (403) before it reads its
//! body, then goes to the state manager, which stores it with its audit entry and publishes the
//! new snapshot before the handler answers.

// utoipa's `#[utoipa::path]` expands `Query<T>` parameters with a path the lint flags.
#![allow(unused_qualifications)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::SystemTime;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::dns::{ExplainError, explain_query};
use crate::routing::{DcState, DcTrace, ServiceId, Standing};
use crate::state::{ApplyError, Snapshot, unix_ms};
use crate::store::{AuditEntry, Change, DrainKey, StoredReport};

use super::ControlState;
use super::auth::{Caller, Need, authenticate};
use super::error::{ApiError, invalid_configuration};

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
    capacity: f64,
    /// Current load, in the same units (≥ 0).
    load: f64,
    /// How long this report stays fresh; default `control.report_ttl_seconds`.
    ttl_seconds: Option<u32>,
    /// Measured latency by client region: an ISO country code or a continent code.
    latency_ms: Option<BTreeMap<String, f64>>,
    /// Relative cost of serving from here (≥ 0).
    cost: Option<f64>,
}

/// Drain or undrain options.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DrainBody {
    /// Only this service (by its id); default every service.
    service: Option<String>,
    /// Drain even if a service would be left with no eligible datacenter.
    #[serde(default)]
    force: bool,
}

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
    /// Drained for every service.
    drained: bool,
    /// Drained for these services only.
    drained_services: Vec<String>,
    /// Standing for each service using it: `healthy`, `unreported`, `stale`, `drained`,
    /// `down`, `stale-past-grace`, `no-report`.
    services: BTreeMap<String, String>,
}

/// Query parameters of `/v1/explain`.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct ExplainParams {
    /// The name asked, e.g. `www.example.com`.
    name: String,
    /// The record type; default `A`.
    #[serde(rename = "type")]
    qtype: Option<String>,
    /// The resolver's address; default 127.0.0.1.
    #[param(value_type = Option<String>)]
    client: Option<IpAddr>,
    /// The EDNS Client Subnet, e.g. `81.2.69.0/24`.
    ecs: Option<String>,
}

/// An explanation.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ExplainView {
    name: String,
    #[serde(rename = "type")]
    qtype: String,
    rcode: String,
    answers: Vec<String>,
    /// The address located.
    client: String,
    /// `ecs` or `resolver`.
    client_source: &'static str,
    /// The geo database network that matched.
    network: String,
    country: Option<String>,
    continent: Option<String>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    ecs_scope: Option<u8>,
    /// The network the answer holds for (the scope and the prefix it covers), e.g.
    /// `81.2.69.0/24`: every client in it gets this answer under the current state.
    scope_network: String,
    service: Option<String>,
    policy: Option<&'static str>,
    basis: Option<String>,
    failed_open: bool,
    datacenters: Vec<DcTraceView>,
}

/// One datacenter in an explanation.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DcTraceView {
    name: String,
    rank: Option<usize>,
    distance_km: Option<f64>,
    score: Option<f64>,
    utilization: Option<f64>,
    standing: String,
    unverified: bool,
    reason: String,
}

/// The running configuration.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConfigView {
    /// Hex SHA-256 of the text.
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

/// Query parameters of `/v1/audit`.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct AuditParams {
    /// Entries after this sequence number.
    after: Option<u64>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

/// One audit log entry.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditView {
    seq: u64,
    unix_ms: u64,
    actor: String,
    role: String,
    action: String,
    target: String,
    #[schema(value_type = Object)]
    detail: serde_json::Value,
}

/// Authenticates, rate-limits and authorizes a write.
pub(super) fn admit(
    state: &ControlState,
    snapshot: &Snapshot,
    headers: &HeaderMap,
    need: Need<'_>,
) -> Result<Caller, ApiError> {
    let control = &snapshot.loaded.config.control;
    let caller = authenticate(headers, control)?;
    state.limiter.check(&caller, control.rate_limit)?;
    caller.require(need)?;
    Ok(caller)
}

/// Reads a JSON body of at most the configured size; an empty body is `T::default()` when
/// `empty_ok`.
pub(super) async fn read_json<T: for<'de> Deserialize<'de>>(
    body: Body,
    limit: usize,
    empty: Option<T>,
) -> Result<T, ApiError> {
    let bytes: Bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::payload_too_large(limit))?;
    if bytes.iter().all(u8::is_ascii_whitespace)
        && let Some(empty) = empty
    {
        return Ok(empty);
    }
    serde_json::from_slice(&bytes)
        .map_err(|error| ApiError::bad_request(format!("invalid JSON body: {error}")))
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
        Err(error @ ApplyError::Store(_)) => Err(ApiError::internal(error.to_string())),
    }
}

/// Accept a datacenter's report.
#[utoipa::path(put, path = "/v1/datacenters/{dc}/report", request_body = ReportBody,
    params(("dc" = String, Path, description = "datacenter name")),
    security(("bearer" = [])),
    responses((status = 200, body = Accepted), (status = 400, body = super::error::ErrorBody),
        (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody), (status = 413, body = super::error::ErrorBody),
        (status = 429, body = super::error::ErrorBody)))]
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
    let report = validate_report(&body, config.control.report_ttl.as_secs() as u32, &state)?;
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

fn validate_report(
    body: &ReportBody,
    default_ttl: u32,
    state: &ControlState,
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
    let ttl_seconds = body.ttl_seconds.unwrap_or(default_ttl);
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
        received_unix_ms: unix_ms(state.clock.now()),
    })
}

/// Every datacenter's state.
#[utoipa::path(get, path = "/v1/datacenters", responses((status = 200, body = [DatacenterView])))]
pub(crate) async fn list_datacenters(
    State(state): State<ControlState>,
) -> Json<Vec<DatacenterView>> {
    let snapshot = state.shared.load();
    let config = &snapshot.loaded.config;
    // Every datacenter's state at one instant, computed once for the whole list.
    let states = snapshot.live.dc_states(config, state.clock.now());
    let views = (0..config.datacenters.len())
        .map(|index| datacenter_view(&snapshot, index, &states[index]))
        .collect();
    Json(views)
}

/// One datacenter's state.
#[utoipa::path(get, path = "/v1/datacenters/{dc}", params(("dc" = String, Path, description = "datacenter name")),
    responses((status = 200, body = DatacenterView), (status = 404, body = super::error::ErrorBody)))]
pub(crate) async fn get_datacenter(
    State(state): State<ControlState>,
    Path(dc): Path<String>,
) -> Result<Json<DatacenterView>, ApiError> {
    let snapshot = state.shared.load();
    let Some(index) = snapshot.loaded.config.datacenter_index(&dc) else {
        return Err(ApiError::not_found(format!("no datacenter {dc:?}")));
    };
    let states = snapshot
        .live
        .dc_states(&snapshot.loaded.config, state.clock.now());
    Ok(Json(datacenter_view(&snapshot, index, &states[index])))
}

/// The view of datacenter `index` in `state` (its entry of `LiveState::dc_states`).
fn datacenter_view(snapshot: &Snapshot, index: usize, state: &DcState) -> DatacenterView {
    let config = &snapshot.loaded.config;
    let dc = &config.datacenters[index];
    let report = state.report.as_ref();
    let freshness = match report {
        None => "unreported",
        Some(r) if r.age <= r.ttl => "fresh",
        Some(_) => "stale",
    };
    let services = config
        .services
        .iter()
        .enumerate()
        .filter(|(_, s)| s.pools.iter().any(|p| p.datacenter == index))
        .map(|(i, s)| {
            let standing = Standing::of(dc, state, ServiceId(i as u16), s);
            (s.id.clone(), standing_label(&standing).to_owned())
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
        drained: state.drained,
        drained_services: state
            .drained_services
            .iter()
            .map(|s| config.services[usize::from(s.0)].id.clone())
            .collect(),
        services,
    }
}

fn standing_label(standing: &Standing) -> &'static str {
    match standing {
        Standing::Healthy => "healthy",
        Standing::Unreported => "unreported",
        Standing::Stale { .. } => "stale",
        Standing::Drained => "drained",
        Standing::ReportedDown => "down",
        Standing::StalePastGrace { .. } => "stale-past-grace",
        Standing::NoReport => "no-report",
    }
}

/// Drain a datacenter (for one service or all).
#[utoipa::path(post, path = "/v1/datacenters/{dc}/drain", request_body = DrainBody,
    params(("dc" = String, Path, description = "datacenter name")), security(("bearer" = [])),
    responses((status = 200, body = Accepted), (status = 409, body = super::error::ErrorBody,
        description = "would leave a service with no eligible datacenter")))]
pub(crate) async fn drain(
    State(state): State<ControlState>,
    Path(dc): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Accepted>, ApiError> {
    set_drain(state, dc, headers, body, true).await
}

/// Lift a datacenter's drain.
#[utoipa::path(post, path = "/v1/datacenters/{dc}/undrain", request_body = DrainBody,
    params(("dc" = String, Path, description = "datacenter name")), security(("bearer" = [])),
    responses((status = 200, body = Accepted)))]
pub(crate) async fn undrain(
    State(state): State<ControlState>,
    Path(dc): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Accepted>, ApiError> {
    set_drain(state, dc, headers, body, false).await
}

async fn set_drain(
    state: ControlState,
    dc: String,
    headers: HeaderMap,
    body: Body,
    drained: bool,
) -> Result<Json<Accepted>, ApiError> {
    let snapshot = state.shared.load();
    let caller = admit(&state, &snapshot, &headers, Need::Operator)?;
    let config = &snapshot.loaded.config;
    if config.datacenter_index(&dc).is_none() {
        return Err(ApiError::not_found(format!("no datacenter {dc:?}")));
    }
    let body: DrainBody =
        read_json(body, config.control.body_limit, Some(DrainBody::default())).await?;
    if let Some(service) = &body.service
        && !config.services.iter().any(|s| s.id == *service)
    {
        return Err(ApiError::not_found(format!("no service {service:?}")));
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
}

/// Drain this instance: `/readyz` fails until undrained.
#[utoipa::path(post, path = "/v1/drain", security(("bearer" = [])), responses((status = 200, body = Accepted)))]
pub(crate) async fn drain_instance(
    State(state): State<ControlState>,
    headers: HeaderMap,
) -> Result<Json<Accepted>, ApiError> {
    set_instance_drain(state, headers, true).await
}

/// Undrain this instance.
#[utoipa::path(post, path = "/v1/undrain", security(("bearer" = [])), responses((status = 200, body = Accepted)))]
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

/// Explain the answer to one query.
#[utoipa::path(get, path = "/v1/explain", params(ExplainParams),
    responses((status = 200, body = ExplainView), (status = 400, body = super::error::ErrorBody)))]
pub(crate) async fn explain(
    State(state): State<ControlState>,
    Query(params): Query<ExplainParams>,
) -> Result<Json<ExplainView>, ApiError> {
    let snapshot = state.shared.load();
    let qtype = params.qtype.clone().unwrap_or_else(|| "A".to_owned());
    let ecs = params
        .ecs
        .as_deref()
        .map(|text| {
            text.parse::<IpNet>().map_err(|_| {
                ApiError::bad_request(format!("ecs: {text:?} is not a network (address/prefix)"))
            })
        })
        .transpose()?;
    let resolver = params.client.unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let explained = explain_query(&snapshot, &params.name, &qtype, resolver, ecs)
        .map_err(|error: ExplainError| ApiError::bad_request(error.to_string()))?;
    let (service, routing) = match explained.routing {
        Some((service, routing)) => (Some(service), Some(routing)),
        None => (None, None),
    };
    let location = explained.location;
    Ok(Json(ExplainView {
        name: params.name,
        qtype: qtype.to_ascii_uppercase(),
        rcode: explained.rcode,
        answers: explained.answers,
        client: explained.client.to_string(),
        client_source: if explained.from_ecs {
            "ecs"
        } else {
            "resolver"
        },
        network: explained.network.to_string(),
        country: location.and_then(|l| l.country).map(|c| c.to_string()),
        continent: location.and_then(|l| l.continent).map(|c| c.to_string()),
        latitude: location.map(|l| l.coordinates.latitude),
        longitude: location.map(|l| l.coordinates.longitude),
        ecs_scope: explained.ecs_scope,
        scope_network: explained.scope_network.to_string(),
        service,
        policy: routing.as_ref().map(|r| r.policy),
        basis: routing
            .as_ref()
            .map(|r| format!("{:?}", r.basis).to_lowercase()),
        failed_open: routing.as_ref().is_some_and(|r| r.failed_open),
        datacenters: routing
            .map(|r| r.datacenters.iter().map(trace_view).collect())
            .unwrap_or_default(),
    }))
}

fn trace_view(trace: &DcTrace) -> DcTraceView {
    DcTraceView {
        name: trace.name.clone(),
        rank: trace.rank,
        distance_km: trace.distance_km.map(|d| (d * 10.0).round() / 10.0),
        score: trace.score,
        utilization: trace.utilization.filter(|u| u.is_finite()),
        standing: standing_label(&trace.standing).to_owned(),
        unverified: trace.unverified,
        reason: trace.reason.clone(),
    }
}

/// Reload configuration, zones and geo database (as SIGHUP does).
#[utoipa::path(post, path = "/v1/reload", security(("bearer" = [])),
    responses((status = 200, body = ConfigView), (status = 422, body = super::error::ErrorBody,
        description = "the configuration is invalid; the previous one keeps serving")))]
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
        Err(error) => Ok(invalid_configuration(&error.problems)),
    }
}

fn config_view(snapshot: &Snapshot) -> ConfigView {
    ConfigView {
        version: snapshot.loaded.config_version.clone(),
        generation: snapshot.generation,
        text: snapshot.loaded.config_text.to_string(),
    }
}

/// The running configuration and its version.
#[utoipa::path(get, path = "/v1/config", responses((status = 200, body = ConfigView)))]
pub(crate) async fn get_config(State(state): State<ControlState>) -> Json<ConfigView> {
    Json(config_view(&state.shared.load()))
}

/// Every configuration version this server has run.
#[utoipa::path(get, path = "/v1/config/versions", responses((status = 200, body = [VersionView])))]
pub(crate) async fn config_versions(
    State(state): State<ControlState>,
) -> Result<Json<Vec<VersionView>>, ApiError> {
    let running = state.shared.load().loaded.config_version.clone();
    let store = state.store.clone();
    let versions = tokio::task::spawn_blocking(move || store.config_versions())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
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

/// A unified diff between two configuration versions.
#[utoipa::path(get, path = "/v1/config/diff", params(DiffParams),
    responses((status = 200, body = String, content_type = "text/plain"), (status = 404, body = super::error::ErrorBody)))]
pub(crate) async fn config_diff(
    State(state): State<ControlState>,
    Query(params): Query<DiffParams>,
) -> Result<Response, ApiError> {
    let to_version = params
        .to
        .unwrap_or_else(|| state.shared.load().loaded.config_version.clone());
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
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let from = from.ok_or_else(|| {
        ApiError::not_found(format!("no configuration version {:?}", params.from))
    })?;
    let to =
        to.ok_or_else(|| ApiError::not_found(format!("no configuration version {to_version:?}")))?;
    let diff = similar::TextDiff::from_lines(&from.text, &to.text)
        .unified_diff()
        .header(&from.hash, &to.hash)
        .to_string();
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], diff).into_response())
}

/// The audit log (operator).
#[utoipa::path(get, path = "/v1/audit", params(AuditParams), security(("bearer" = [])),
    responses((status = 200, body = [AuditView])))]
pub(crate) async fn audit_log(
    State(state): State<ControlState>,
    headers: HeaderMap,
    Query(params): Query<AuditParams>,
) -> Result<Json<Vec<AuditView>>, ApiError> {
    let snapshot = state.shared.load();
    admit(&state, &snapshot, &headers, Need::Operator)?;
    let limit = params.limit.unwrap_or(100).min(1000);
    let store = state.store.clone();
    let entries = tokio::task::spawn_blocking(move || store.audit_log(params.after, limit))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(
        entries
            .into_iter()
            .map(|(seq, e)| AuditView {
                seq,
                unix_ms: e.unix_ms,
                actor: e.actor,
                role: e.role,
                action: e.action,
                target: e.target,
                detail: e.detail,
            })
            .collect(),
    ))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, body = String, content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<ControlState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = String)))]
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: serving, not drained, not shutting down.
#[utoipa::path(get, path = "/readyz", responses((status = 200, body = String), (status = 503, body = String)))]
pub(crate) async fn readyz(State(state): State<ControlState>) -> (StatusCode, &'static str) {
    if state.readiness.get() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
