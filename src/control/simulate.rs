//! What-if over HTTP: `GET /v1/traffic` (the sampled record of recent traffic, with the state
//! and configuration it was routed under, so that `meridian simulate` can replay it offline)
//! and `POST /v1/simulate` (hypothetical changes replayed against it). The drain rail asks the
//! same question before a drain ([`drain_overloads`]).
//!
//! The simulation itself is `traffic`'s: this file turns JSON into its changes and its
//! findings into JSON, and runs it off the async runtime. It changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::{Config, Policy};
use crate::dns::{Loaded, Snapshot};
use crate::routing::{BaseTable, DcState, ReportState, RoutingTable, ServiceId, Toggle, Toggles};
use crate::traffic::{
    Change, DcChange, Sample, SampledNetwork, ServiceChange, Simulation, World, simulate,
};

use super::ControlState;
use super::auth::Need;
use super::error::ApiError;
use super::write::{admit, read_json};

/// The most changes one simulation takes.
const MAX_CHANGES: usize = 64;

/// The sampled record of recent traffic and what it was routed under.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrafficView {
    /// One query in this many was recorded (0: recording is off).
    sample_one_in: u32,
    /// How far back the record reaches.
    window_seconds: u64,
    /// Samples lost (the window was full, or queries came faster than they were collected).
    dropped: u64,
    /// The version of the running configuration.
    config_version: String,
    /// The running configuration's text, so the record can be replayed offline.
    configuration: String,
    /// Every datacenter's state as routing saw it.
    datacenters: Vec<DcStateView>,
    /// Feature toggles switched off (routing honours them; an offline replay does too).
    #[serde(default)]
    toggles_off: Vec<String>,
    /// Sampled queries per service and client network.
    networks: Vec<NetworkView>,
}

/// A datacenter's state, as routing sees it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DcStateView {
    name: String,
    drained: bool,
    /// Drained for these services (ids) only.
    drained_services: Vec<String>,
    /// Restored after a restart, not yet confirmed.
    unverified: bool,
    /// The latest report, if any.
    report: Option<ReportView>,
    /// Milliseconds since it became eligible again, when known (slow start ramps from it).
    #[serde(default)]
    back_for_ms: Option<u64>,
}

/// A report as routing sees it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReportView {
    healthy: bool,
    capacity: f64,
    load: f64,
    #[schema(value_type = BTreeMap<String, f64>)]
    latency_ms: BTreeMap<String, f64>,
    cost: Option<f64>,
    /// The datacenter's own service latency (p99), milliseconds.
    #[serde(default)]
    service_latency_ms: Option<f64>,
    age_ms: u64,
    ttl_ms: u64,
}

/// Sampled queries of one service from one client network.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NetworkView {
    /// The service's id.
    service: String,
    /// The client network, e.g. `81.2.69.0/24`.
    #[schema(value_type = String)]
    network: IpNet,
    queries: u64,
}

/// Hypothetical changes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SimulateBody {
    /// Applied together: a candidate configuration first, then service changes, then
    /// datacenter changes.
    #[schema(max_items = 64)]
    changes: Vec<ChangeBody>,
}

/// One change: a datacenter's state (`datacenter` with `healthy`, `drained`, `load`,
/// `capacity`; `service` limits a drain to one service), a service's `policy` or `pools`
/// (`service` without `datacenter`), or a whole candidate configuration (`config`, YAML text).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangeBody {
    datacenter: Option<String>,
    service: Option<String>,
    healthy: Option<bool>,
    drained: Option<bool>,
    #[schema(minimum = 0.0)]
    load: Option<f64>,
    #[schema(minimum = 0.0)]
    capacity: Option<f64>,
    /// `nearest`, `nearest-with-capacity`, `metric`, `weighted` or `failover`.
    #[schema(value_type = Option<PolicyName>)]
    policy: Option<String>,
    /// Keep only these datacenters in the service's pools.
    pools: Option<Vec<String>>,
    /// A whole candidate configuration (YAML); the running geo database is used.
    config: Option<String>,
}

/// A policy's name, for the document (the body keeps it as text and checks it).
#[derive(ToSchema)]
#[schema(rename_all = "kebab-case")]
#[allow(dead_code)]
enum PolicyName {
    Nearest,
    NearestWithCapacity,
    Metric,
    Weighted,
    Failover,
}

/// What a simulation found, per service of the sample.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SimulationView {
    /// Each sampled query stands for this many.
    sample_one_in: u32,
    window_seconds: u64,
    /// Sampled queries replayed.
    sampled_queries: u64,
    services: Vec<ServiceView>,
    /// Every datacenter's load now and projected.
    datacenters: Vec<ProjectionView>,
}

/// One service's traffic now and after the changes.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ServiceView {
    service: String,
    /// Sampled queries.
    queries: u64,
    /// Each datacenter's share (of the queries it is ranked first for) now and after.
    shares: Vec<ShareView>,
    /// Queries whose first datacenter would change; `to` null: no answer.
    moves: Vec<MoveView>,
    /// Datacenters past a watermark after the changes (by projected load).
    watermarks: Vec<WatermarkView>,
    /// Sampled queries whose answer would fail open.
    failed_open: u64,
    /// Some of those clients' networks.
    #[schema(value_type = Vec<String>)]
    failed_open_networks: Vec<IpNet>,
    /// Sampled queries failing open now.
    failed_open_now: u64,
}

/// A datacenter's share of a service's queries.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ShareView {
    datacenter: String,
    queries_now: u64,
    queries_after: u64,
    share_now: f64,
    share_after: f64,
}

/// Queries that would move.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MoveView {
    from: Option<String>,
    to: Option<String>,
    queries: u64,
    /// Some of the networks, largest first.
    #[schema(value_type = Vec<String>)]
    networks: Vec<IpNet>,
}

/// A datacenter past a watermark.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WatermarkView {
    datacenter: String,
    /// `low` or `high`.
    past: &'static str,
    /// Not past it now.
    newly: bool,
    utilization_now: Option<f64>,
    utilization_after: f64,
    low: f64,
    high: f64,
}

/// A datacenter's load now and projected.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProjectionView {
    datacenter: String,
    queries_now: u64,
    queries_after: u64,
    load_now: Option<f64>,
    load_after: Option<f64>,
    capacity: Option<f64>,
    utilization_now: Option<f64>,
    utilization_after: Option<f64>,
}

/// The body of a drain a rail refuses: the error shape of every error, and when the capacity
/// rail refused, each finding and the simulation.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DrainConflict {
    /// `conflict`.
    error: &'static str,
    message: String,
    /// One line per datacenter the drain would push past its high watermark.
    #[schema(required = false)]
    problems: Vec<String>,
    /// The simulation of the drain (the capacity rail only).
    #[schema(required = false)]
    simulation: SimulationView,
}

/// The sampled record of recent traffic.
#[utoipa::path(get, path = "/v1/traffic", security(("bearer" = [])),
    responses((status = 200, description = "the record, with the state and configuration it was routed under", body = TrafficView)))]
pub(crate) async fn get_traffic(
    State(state): State<ControlState>,
    headers: HeaderMap,
) -> Result<Json<TrafficView>, ApiError> {
    let snapshot = state.shared.load();
    admit(&state, &snapshot, &headers, Need::Operator)?;
    let sample = state.traffic.sample(Instant::now());
    Ok(Json(traffic_view(&snapshot, &sample)))
}

/// Replays the recorded traffic under hypothetical changes; changes nothing.
#[utoipa::path(post, path = "/v1/simulate", request_body = SimulateBody, security(("bearer" = [])),
    responses(
        (status = 200, description = "per service: shares now and after, moves, watermarks, fail-open clients", body = SimulationView),
        (status = 404, description = "a change names no such datacenter, service or pool", body = super::error::ErrorBody),
        (status = 422, description = "the candidate configuration is invalid", body = super::error::ErrorBody)))]
pub(crate) async fn post_simulate(
    State(state): State<ControlState>,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let snapshot = state.shared.load();
    admit(&state, &snapshot, &headers, Need::Operator)?;
    let body: SimulateBody =
        read_json(body, snapshot.loaded.config.control.body_limit, None).await?;
    if body.changes.len() > MAX_CHANGES {
        return Err(ApiError::bad_request(format!(
            "{} changes; at most {MAX_CHANGES}",
            body.changes.len()
        )));
    }
    let changes = match changes_of(body.changes) {
        Ok(changes) => changes,
        Err(Refused::Config(problems)) => {
            return Ok(super::error::invalid_configuration(&problems));
        }
        Err(Refused::Api(error)) => return Err(error),
    };
    let sample = state.traffic.sample(Instant::now());
    let view = run(snapshot, changes, sample).await?;
    Ok(Json(view).into_response())
}

/// What a drain of `dc` (for `service`, or every service) would do, when it would push another
/// datacenter past its high watermark: each such finding and the simulation.
///
/// # Errors
///
/// The simulation could not run (an internal failure).
pub(crate) async fn drain_overloads(
    state: &ControlState,
    snapshot: Arc<Snapshot>,
    dc: &str,
    service: Option<&str>,
) -> Result<Option<DrainConflict>, ApiError> {
    let sample = state.traffic.sample(Instant::now());
    if sample.networks.is_empty() {
        return Ok(None);
    }
    let change = Change::Datacenter(DcChange {
        datacenter: dc.to_owned(),
        service: service.map(str::to_owned),
        drained: Some(true),
        ..DcChange::default()
    });
    let simulation = replay(snapshot, vec![change], sample).await?;
    let problems = simulation.newly_past_high(dc);
    if problems.is_empty() {
        return Ok(None);
    }
    let mut overloaded: Vec<&str> = simulation
        .services
        .iter()
        .flat_map(|s| &s.watermarks)
        .filter(|w| w.newly && w.past == "high" && w.datacenter != dc)
        .map(|w| w.datacenter.as_str())
        .collect();
    overloaded.sort_unstable();
    overloaded.dedup();
    Ok(Some(DrainConflict {
        error: "conflict",
        message: format!(
            "by the recorded traffic, draining {dc} would push {} past the high watermark; add \"force\": true to drain anyway",
            overloaded.join(", ")
        ),
        problems,
        simulation: simulation_view(&simulation),
    }))
}

/// Replays the record of `sample_json` (a `GET /v1/traffic` answer) under the configuration,
/// state and feature toggles it was recorded with, and under `candidate` with the same state and
/// toggles, both located with `candidate`'s geo database: what `meridian simulate` prints, as
/// JSON.
///
/// # Errors
///
/// The sample is not a `GET /v1/traffic` answer, or its configuration does not validate.
pub fn simulate_offline(sample_json: &[u8], candidate: &Loaded) -> Result<String, String> {
    let view: TrafficView = serde_json::from_slice(sample_json)
        .map_err(|e| format!("not a traffic record (GET /v1/traffic): {e}"))?;
    let config = Config::from_yaml_str(&view.configuration)
        .map_err(|e| format!("the recorded configuration does not validate:\n{e}"))?;
    let states: Vec<DcState> = config
        .datacenters
        .iter()
        .map(|dc| {
            view.datacenters
                .iter()
                .find(|state| state.name == dc.name)
                .map(|state| dc_state(&config, state))
                .unwrap_or_default()
        })
        .collect();
    let base = Arc::new(BaseTable::build(&config, Arc::clone(&candidate.geo)));
    let mut toggles = Toggles::default();
    for name in &view.toggles_off {
        let toggle = Toggle::named(name).ok_or_else(|| format!("no feature toggle {name:?}"))?;
        toggles = toggles.with(toggle, false);
    }
    let routing = RoutingTable::build_toggled(base, &config, &states, toggles, None);
    let before = World {
        config: &config,
        states: &states,
        routing: &routing,
    };
    let after = before
        .changed(&[Change::Config(Arc::clone(&candidate.config))])
        .map_err(|e| e.to_string())?;
    let sample = Sample {
        sample_one_in: view.sample_one_in,
        window: Duration::from_secs(view.window_seconds),
        networks: view
            .networks
            .into_iter()
            .map(|n| SampledNetwork {
                service: n.service,
                network: n.network,
                queries: n.queries,
            })
            .collect(),
        dropped: view.dropped,
    };
    let simulation = simulate(before, after.world(), &sample);
    serde_json::to_string_pretty(&simulation_view(&simulation)).map_err(|e| e.to_string())
}

enum Refused {
    Config(Vec<crate::config::Problem>),
    Api(ApiError),
}

/// Runs the simulation off the async runtime (map builds take CPU).
async fn run(
    snapshot: Arc<Snapshot>,
    changes: Vec<Change>,
    sample: Sample,
) -> Result<SimulationView, ApiError> {
    Ok(simulation_view(&replay(snapshot, changes, sample).await?))
}

async fn replay(
    snapshot: Arc<Snapshot>,
    changes: Vec<Change>,
    sample: Sample,
) -> Result<Simulation, ApiError> {
    tokio::task::spawn_blocking(move || {
        let before = World {
            config: &snapshot.loaded.config,
            states: snapshot.routing.states(),
            routing: &snapshot.routing,
        };
        let after = before
            .changed(&changes)
            .map_err(|e| ApiError::not_found(e.to_string()))?;
        Ok(simulate(before, after.world(), &sample))
    })
    .await
    .map_err(|e| ApiError::internal(format!("the simulation failed: {e}")))?
}

fn changes_of(bodies: Vec<ChangeBody>) -> Result<Vec<Change>, Refused> {
    let bad = |message: String| Refused::Api(ApiError::bad_request(message));
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let dc_fields = body.healthy.is_some()
                || body.drained.is_some()
                || body.load.is_some()
                || body.capacity.is_some();
            let service_fields = body.policy.is_some() || body.pools.is_some();
            if let Some(text) = body.config {
                if body.datacenter.is_some() || body.service.is_some() || dc_fields || service_fields {
                    return Err(bad(format!("changes[{i}]: config stands alone")));
                }
                let config = Config::from_yaml_str(&text).map_err(|e| Refused::Config(e.problems))?;
                return Ok(Change::Config(Arc::new(config)));
            }
            if let Some(datacenter) = body.datacenter {
                if service_fields {
                    return Err(bad(format!(
                        "changes[{i}]: policy and pools are a service's; give service without datacenter"
                    )));
                }
                if !dc_fields {
                    return Err(bad(format!(
                        "changes[{i}]: say what changes: healthy, drained, load or capacity"
                    )));
                }
                for (what, value) in [("load", body.load), ("capacity", body.capacity)] {
                    if value.is_some_and(|v| !v.is_finite() || v < 0.0) {
                        return Err(bad(format!("changes[{i}].{what}: must be at least 0")));
                    }
                }
                if body.service.is_some() && body.drained.is_none() {
                    return Err(bad(format!(
                        "changes[{i}]: service limits a drain; give drained too"
                    )));
                }
                return Ok(Change::Datacenter(DcChange {
                    datacenter,
                    service: body.service,
                    healthy: body.healthy,
                    drained: body.drained,
                    load: body.load,
                    capacity: body.capacity,
                }));
            }
            let Some(service) = body.service else {
                return Err(bad(format!(
                    "changes[{i}]: name a datacenter or a service, or give a config"
                )));
            };
            if dc_fields || !service_fields {
                return Err(bad(format!(
                    "changes[{i}]: a service change sets policy or pools"
                )));
            }
            let policy = match body.policy.as_deref() {
                None => None,
                Some(name) => Some(policy_named(name).ok_or_else(|| {
                    bad(format!("changes[{i}].policy: {name:?} is not a policy"))
                })?),
            };
            Ok(Change::Service(ServiceChange {
                service,
                policy,
                pools: body.pools,
            }))
        })
        .collect()
}

fn policy_named(name: &str) -> Option<Policy> {
    [
        Policy::Nearest,
        Policy::NearestWithCapacity,
        Policy::Metric,
        Policy::Weighted,
        Policy::Failover,
    ]
    .into_iter()
    .find(|policy| policy.name() == name)
}

fn traffic_view(snapshot: &Snapshot, sample: &Sample) -> TrafficView {
    let config = &snapshot.loaded.config;
    TrafficView {
        sample_one_in: sample.sample_one_in,
        window_seconds: sample.window.as_secs(),
        dropped: sample.dropped,
        config_version: snapshot.loaded.config_version.clone(),
        toggles_off: snapshot
            .routing
            .toggles()
            .off()
            .map(|toggle| toggle.name().to_owned())
            .collect(),
        configuration: snapshot.loaded.config_text.to_string(),
        datacenters: config
            .datacenters
            .iter()
            .zip(snapshot.routing.states())
            .map(|(dc, state)| DcStateView {
                name: dc.name.clone(),
                drained: state.drained,
                drained_services: state
                    .drained_services
                    .iter()
                    .filter_map(|s| config.services.get(usize::from(s.0)))
                    .map(|s| s.id.clone())
                    .collect(),
                unverified: state.unverified,
                back_for_ms: state
                    .back_for
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                report: state.report.as_ref().map(|r| ReportView {
                    service_latency_ms: r.service_latency_ms,
                    healthy: r.healthy,
                    capacity: r.capacity,
                    load: r.load,
                    latency_ms: r.latency_ms.clone(),
                    cost: r.cost,
                    age_ms: u64::try_from(r.age.as_millis()).unwrap_or(u64::MAX),
                    ttl_ms: u64::try_from(r.ttl.as_millis()).unwrap_or(u64::MAX),
                }),
            })
            .collect(),
        networks: sample
            .networks
            .iter()
            .map(|n| NetworkView {
                service: n.service.clone(),
                network: n.network,
                queries: n.queries,
            })
            .collect(),
    }
}

fn dc_state(config: &Config, view: &DcStateView) -> DcState {
    DcState {
        drained: view.drained,
        drained_services: view
            .drained_services
            .iter()
            .filter_map(|id| config.services.iter().position(|s| s.id == *id))
            .map(|i| ServiceId(u16::try_from(i).expect("bounded")))
            .collect(),
        report: view.report.as_ref().map(|r| ReportState {
            healthy: r.healthy,
            capacity: r.capacity,
            load: r.load,
            latency_ms: r.latency_ms.clone(),
            cost: r.cost,
            service_latency_ms: r.service_latency_ms,
            age: Duration::from_millis(r.age_ms),
            ttl: Duration::from_millis(r.ttl_ms),
        }),
        unverified: view.unverified,
        back_for: view.back_for_ms.map(Duration::from_millis),
        back_for_services: Vec::new(),
    }
}

fn simulation_view(simulation: &Simulation) -> SimulationView {
    SimulationView {
        sample_one_in: simulation.sample_one_in,
        window_seconds: simulation.window.as_secs(),
        sampled_queries: simulation.sampled_queries,
        services: simulation
            .services
            .iter()
            .map(|s| ServiceView {
                service: s.service.clone(),
                queries: s.queries,
                shares: s
                    .datacenters
                    .iter()
                    .map(|d| ShareView {
                        datacenter: d.datacenter.clone(),
                        queries_now: d.queries_now,
                        queries_after: d.queries_after,
                        share_now: d.share_now,
                        share_after: d.share_after,
                    })
                    .collect(),
                moves: s
                    .moves
                    .iter()
                    .map(|m| MoveView {
                        from: m.from.clone(),
                        to: m.to.clone(),
                        queries: m.queries,
                        networks: m.networks.clone(),
                    })
                    .collect(),
                watermarks: s
                    .watermarks
                    .iter()
                    .map(|w| WatermarkView {
                        datacenter: w.datacenter.clone(),
                        past: w.past,
                        newly: w.newly,
                        utilization_now: w.utilization_now,
                        utilization_after: w.utilization_after,
                        low: w.low,
                        high: w.high,
                    })
                    .collect(),
                failed_open: s.failed_open,
                failed_open_networks: s.failed_open_networks.clone(),
                failed_open_now: s.failed_open_now,
            })
            .collect(),
        datacenters: simulation
            .projections
            .iter()
            .map(|p| ProjectionView {
                datacenter: p.datacenter.clone(),
                queries_now: p.queries_now,
                queries_after: p.queries_after,
                load_now: p.load_now,
                load_after: p.load_after,
                capacity: p.capacity,
                utilization_now: p.utilization_now,
                utilization_after: p.utilization_after,
            })
            .collect(),
    }
}
