//! Explanations: one decision retraced with every datacenter's rank and reason.
//!
//! Slow path for operators (`/v1/explain`, `_explain.` TXT queries): it allocates freely. The
//! ranking it reports is the one [`RoutingTable::resolve`] returns, so an explanation always
//! matches what DNS answers.

use crate::config::{Config, Policy};
use crate::geo::Location;

use super::base::{fence_for, rule_dcs};
use super::live::{DcState, RoutingTable, Standing, metric_score};
use super::policy;
use super::toggles::Toggle;
use super::{Basis, Client, DcId, Family, Scope, ServiceId, bucket};

/// The decision for one query, with every datacenter's part in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The service's policy name, as configured.
    pub policy: &'static str,
    /// The feature toggles switched off when the decision was made (see [`Toggles::policy`](super::Toggles::policy)
    /// for how they change a policy).
    pub toggles_off: Vec<Toggle>,
    /// Why the ranking is what it is.
    pub basis: Basis,
    /// How far the answer holds.
    pub scope: Scope,
    /// Every datacenter was ineligible and the service failed open.
    pub failed_open: bool,
    /// The answer's datacenters, best first (empty: SERVFAIL).
    pub ranking: Vec<DcId>,
    /// Every datacenter of the service: ranked ones in order, then the skipped ones.
    pub datacenters: Vec<DcTrace>,
}

/// One datacenter's part in a decision.
#[derive(Debug, Clone, PartialEq)]
pub struct DcTrace {
    /// The datacenter.
    pub dc: DcId,
    /// Its name.
    pub name: String,
    /// Its position in the answer's ranking (1 = first), if ranked.
    pub rank: Option<usize>,
    /// Great-circle distance from the client, when the client is located.
    pub distance_km: Option<f64>,
    /// The `metric` score (lower is better), for `metric` services.
    pub score: Option<f64>,
    /// Load over capacity, when reported.
    pub utilization: Option<f64>,
    /// Its standing for this service.
    pub standing: Standing,
    /// Restored after a restart, not yet confirmed by a fresh report.
    pub unverified: bool,
    /// Why it is where it is, in words.
    pub reason: String,
}

/// Explains how `table` routes `client` (located at `location`) for `service`.
pub fn explain(
    table: &RoutingTable,
    config: &Config,
    states: &[DcState],
    service: ServiceId,
    client: &Client,
    location: Option<&Location>,
) -> Explanation {
    let service_config = &config.services[usize::from(service.0)];
    // The ranking and what bounds its scope, whatever the family asked for.
    let decision = table.resolve(service, client, Family::Any);
    let ranking = decision.datacenters.to_vec();
    let fenced_to = location
        .and_then(|cell| fence_for(service_config, cell))
        .map(|rule| rule_dcs(service_config, rule));
    let mut datacenters: Vec<DcTrace> = service_config
        .pools
        .iter()
        .map(|pool| {
            let dc = policy::dc_id(pool);
            let dc_config = &config.datacenters[pool.datacenter];
            let state = &states[pool.datacenter];
            let standing = Standing::of(dc_config, state, service, service_config);
            let utilization = state.report.as_ref().map(|r| r.utilization());
            let rank = ranking.iter().position(|d| *d == dc).map(|i| i + 1);
            let distance_km = location.map(|cell| {
                cell.coordinates
                    .distance_km(&table.base().dc_coordinates[pool.datacenter])
            });
            let score = match (table.toggles().policy(service_config.policy), location) {
                (Policy::Metric, Some(cell)) => {
                    Some(metric_score(table.base(), service_config, states, cell, dc))
                }
                _ => None,
            };
            let geofenced = fenced_to
                .as_ref()
                .is_some_and(|allowed| !allowed.contains(&dc));
            let overloaded = table.is_overloaded(service, dc);
            let slow = table.is_slow(service, dc);
            let ramp = table.ramp(service, dc);
            let spills = bucket(client.network_key) < table.spill(service, dc);
            let mut reason = reason(
                rank,
                &standing,
                geofenced,
                overloaded,
                spills,
                utilization,
                decision.failed_open,
            );
            let latency = state.report.as_ref().and_then(|r| r.service_latency_ms);
            let mut notes: Vec<String> = Vec::new();
            if slow {
                notes.push(format!(
                    "service latency {:.0} ms is over the limit of {:.0} ms",
                    latency.unwrap_or_default(),
                    service_config.max_service_latency_ms.unwrap_or_default()
                ));
            }
            if let Some(ramp) = ramp {
                notes.push(ramp.describe());
            }
            match service_config.policy {
                Policy::LeastLoaded => notes.push(format!(
                    "least-loaded: {}",
                    utilization.filter(|u| u.is_finite()).map_or_else(
                        || "no report, counted as empty".to_owned(),
                        |u| format!("{:.0} % utilization", u * 100.0)
                    )
                )),
                Policy::Cascade => notes.push(format!(
                    "cascade: position {} in the order",
                    service_config
                        .order
                        .iter()
                        .position(|&p| service_config.pools[p].datacenter == pool.datacenter)
                        .map_or(0, |p| p + 1)
                )),
                _ => {}
            }
            if let (Some(extra), Some(cell)) = (service_config.max_extra_km, location) {
                let nearest = service_config
                    .pools
                    .iter()
                    .filter(|p| {
                        let id = policy::dc_id(p);
                        ranking.contains(&id)
                            || Standing::of(
                                &config.datacenters[p.datacenter],
                                &states[p.datacenter],
                                service,
                                service_config,
                            )
                            .is_eligible()
                    })
                    .map(|p| {
                        cell.coordinates
                            .distance_km(&table.base().dc_coordinates[p.datacenter])
                    })
                    .fold(f64::INFINITY, f64::min);
                if distance_km.is_some_and(|d| d > nearest + extra) {
                    notes.push(format!(
                        "more than max_extra_km ({extra} km) farther than the nearest"
                    ));
                }
            }
            if let Some(bias) = pool.bias.describe() {
                notes.push(bias);
            }
            if !notes.is_empty() {
                reason = format!("{reason} ({})", notes.join("; "));
            }
            DcTrace {
                dc,
                name: dc_config.name.clone(),
                rank,
                distance_km,
                score,
                utilization,
                standing,
                unverified: state.unverified,
                reason,
            }
        })
        .collect();
    datacenters.sort_by_key(|trace| trace.rank.unwrap_or(usize::MAX));
    Explanation {
        policy: service_config.policy.name(),
        toggles_off: table.toggles().off().collect(),
        basis: decision.basis,
        scope: decision.scope,
        failed_open: decision.failed_open,
        ranking,
        datacenters,
    }
}

fn reason(
    rank: Option<usize>,
    standing: &Standing,
    geofenced: bool,
    overloaded: bool,
    spills: bool,
    utilization: Option<f64>,
    failed_open: bool,
) -> String {
    let percent = |u: f64| format!("{:.0} % utilization", u * 100.0);
    let standing_text = match standing {
        Standing::Healthy => "healthy".to_owned(),
        Standing::Unreported => "no report yet (not required)".to_owned(),
        Standing::Stale { age } => {
            format!("stale {} s, keeping its last known state", age.as_secs())
        }
        Standing::Drained => "drained".to_owned(),
        Standing::ReportedDown => "reported down".to_owned(),
        Standing::StalePastGrace { age } => {
            format!("stale {} s, past its grace period", age.as_secs())
        }
        Standing::NoReport => "no report (required)".to_owned(),
    };
    match rank {
        None if geofenced => "skipped: geofenced".to_owned(),
        // Decision maps keep only as many datacenters as an answer can use.
        None if standing.is_eligible() => {
            format!("not needed: {standing_text}, ranked below the answer's datacenters")
        }
        None => format!("skipped: {standing_text}"),
        Some(_) if failed_open => {
            format!("failed open: {standing_text}, but every datacenter is ineligible")
        }
        Some(1) => format!("chosen: {standing_text}"),
        Some(n) if overloaded => format!(
            "ranked {n}: {} is over the high watermark",
            utilization.map_or_else(String::new, percent)
        ),
        Some(n) if spills => format!(
            "ranked {n}: {} sends this client network to the next datacenter",
            utilization.map_or_else(String::new, percent)
        ),
        Some(n) => format!("ranked {n}: {standing_text}"),
    }
}
