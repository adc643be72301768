//! What-if: the recorded traffic routed under the live state and under a changed one.
//!
//! [`World::changed`] applies hypothetical changes (a datacenter down, drained, at a given load
//! or capacity; a service's policy or pools; a whole candidate configuration) to a world and
//! builds its [`RoutingTable`] with the same code the state manager publishes with.
//! [`simulate`] then places every sampled client network with [`Client::locate`] and resolves
//! it in both worlds with [`RoutingTable::resolve`], exactly as a DNS answer does, and counts
//! where the queries go.
//!
//! Two estimates are not routing's own, and are documented as such: a client network is placed
//! at its first address (exact for ECS clients, whose address is the network's), and a
//! datacenter's load after the change is its load now plus its load per sampled query times the
//! queries it gains or loses (the fleet's average load per query where it had none). It does
//! not follow second-order effects: the spill that a projected load would cause once the
//! datacenter reports it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::config::{Config, Policy, ServiceConfig};
use crate::routing::{BaseTable, Client, DcState, Family, ReportState, RoutingTable, ServiceId};

use super::Sample;

/// How many example networks a move or a fail-open finding lists.
const EXAMPLE_NETWORKS: usize = 8;

/// A configuration, every datacenter's state, and the routing table built from them.
#[derive(Debug, Clone, Copy)]
pub struct World<'a> {
    /// The configuration.
    pub config: &'a Config,
    /// Each datacenter's state, by index in `config.datacenters`.
    pub states: &'a [DcState],
    /// The table built from them.
    pub routing: &'a RoutingTable,
}

/// A world built by [`World::changed`], owning its parts.
#[derive(Debug)]
pub struct Changed {
    /// The configuration after the changes.
    pub config: Arc<Config>,
    /// The datacenters' states after the changes.
    pub states: Vec<DcState>,
    /// The routing table built from them.
    pub routing: RoutingTable,
}

/// One hypothetical change.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A datacenter's state.
    Datacenter(DcChange),
    /// A service's policy or pools.
    Service(ServiceChange),
    /// A whole candidate configuration (applied before every other change).
    Config(Arc<Config>),
}

/// A datacenter's state changed; unset fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DcChange {
    /// The datacenter's name.
    pub datacenter: String,
    /// Only for this service (its id), for `drained`; default every service.
    pub service: Option<String>,
    /// Reported healthy or down (a fresh report).
    pub healthy: Option<bool>,
    /// Drained or undrained by an operator.
    pub drained: Option<bool>,
    /// Reported load.
    pub load: Option<f64>,
    /// Reported capacity.
    pub capacity: Option<f64>,
}

/// A service's policy or pools changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceChange {
    /// The service's id.
    pub service: String,
    /// The new policy.
    pub policy: Option<Policy>,
    /// Keep only these pools (datacenter names), in the service's order; overrides and
    /// geofences keep their remaining datacenters.
    pub pools: Option<Vec<String>>,
}

/// A change that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WorldError(pub String);

/// What the simulation found.
#[derive(Debug, Clone, PartialEq)]
pub struct Simulation {
    /// Each sampled query stands for this many.
    pub sample_one_in: u32,
    /// How far back the sample reaches.
    pub window: Duration,
    /// Sampled queries replayed.
    pub sampled_queries: u64,
    /// Per service of the sample, by id.
    pub services: Vec<ServiceOutcome>,
    /// Every datacenter's load now and projected, by name.
    pub projections: Vec<Projection>,
}

/// One service's traffic before and after.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceOutcome {
    /// The service's id.
    pub service: String,
    /// Sampled queries.
    pub queries: u64,
    /// Each datacenter's share now and after (of the queries it is ranked first for).
    pub datacenters: Vec<DcShare>,
    /// Queries whose first datacenter changes, by (from, to); `None`: no answer (SERVFAIL, or
    /// the service is gone from a candidate configuration).
    pub moves: Vec<Move>,
    /// Datacenters of the service whose projected utilization would be past a watermark.
    pub watermarks: Vec<WatermarkFinding>,
    /// Sampled queries whose answer would fail open (every datacenter ineligible), and some of
    /// their networks.
    pub failed_open: u64,
    /// Networks that would fail open (at most a few).
    pub failed_open_networks: Vec<IpNet>,
    /// Sampled queries failing open now.
    pub failed_open_now: u64,
}

/// A datacenter's share of one service's queries.
#[derive(Debug, Clone, PartialEq)]
pub struct DcShare {
    /// Its name.
    pub datacenter: String,
    /// Sampled queries it is ranked first for now.
    pub queries_now: u64,
    /// And after the change.
    pub queries_after: u64,
    /// Share now, 0 to 1.
    pub share_now: f64,
    /// Share after, 0 to 1.
    pub share_after: f64,
}

/// Queries that would change datacenter.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    /// First datacenter now (`None`: no answer now).
    pub from: Option<String>,
    /// First datacenter after (`None`: no answer).
    pub to: Option<String>,
    /// Sampled queries.
    pub queries: u64,
    /// Some of the networks that move, largest first.
    pub networks: Vec<IpNet>,
}

/// A datacenter past a watermark of a service it serves, after the change.
#[derive(Debug, Clone, PartialEq)]
pub struct WatermarkFinding {
    /// Its name.
    pub datacenter: String,
    /// Utilization now (reported), if known.
    pub utilization_now: Option<f64>,
    /// Projected utilization after.
    pub utilization_after: f64,
    /// The service's low watermark.
    pub low: f64,
    /// The service's high watermark.
    pub high: f64,
    /// `high` when past the high watermark, else `low`.
    pub past: &'static str,
    /// It is not past this watermark now: the change would put it there.
    pub newly: bool,
}

/// A datacenter's load now and projected after the change.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    /// Its name.
    pub datacenter: String,
    /// Sampled queries it is ranked first for now, over every service.
    pub queries_now: u64,
    /// And after.
    pub queries_after: u64,
    /// Reported load now.
    pub load_now: Option<f64>,
    /// Projected load after.
    pub load_after: Option<f64>,
    /// Reported capacity after the change.
    pub capacity: Option<f64>,
    /// Utilization now.
    pub utilization_now: Option<f64>,
    /// Projected utilization after.
    pub utilization_after: Option<f64>,
}

impl<'a> World<'a> {
    /// This world with `changes` applied: a candidate configuration first (datacenters and
    /// services keep their state by name), then service changes, then datacenter changes, in
    /// order; the routing table is built as the state manager builds it, over this world's table
    /// (so watermark hysteresis carries over and unchanged decision maps are reused).
    ///
    /// CPU-heavy when a configuration or policy changes (decision maps are built): run it off
    /// the async runtime.
    ///
    /// # Errors
    ///
    /// A change naming a datacenter or service that does not exist, a pool the service does
    /// not have, or a load or capacity that is negative or not finite.
    pub fn changed(&self, changes: &[Change]) -> Result<Changed, WorldError> {
        let candidate = changes.iter().rev().find_map(|change| match change {
            Change::Config(config) => Some(Arc::clone(config)),
            _ => None,
        });
        let mut states = match &candidate {
            Some(config) => carry_states(self.config, self.states, config),
            None => self.states.to_vec(),
        };
        let mut config = candidate.unwrap_or_else(|| Arc::new(self.config.clone()));
        let mut config_changed = !std::ptr::eq(&*config, self.config) && *config != *self.config;
        for change in changes {
            if let Change::Service(change) = change {
                let config = Arc::make_mut(&mut config);
                apply_service(config, change)?;
                config_changed = true;
            }
        }
        for change in changes {
            if let Change::Datacenter(change) = change {
                apply_datacenter(&config, &mut states, change)?;
            }
        }
        let base = if config_changed {
            Arc::new(BaseTable::build(
                &config,
                Arc::clone(self.routing.base().geo()),
            ))
        } else {
            Arc::clone(self.routing.base())
        };
        // Under the same feature toggles as this world's table: what DNS would answer.
        let routing = RoutingTable::build_toggled(
            base,
            &config,
            &states,
            self.routing.toggles(),
            Some(self.routing),
        );
        Ok(Changed {
            config,
            states,
            routing,
        })
    }
}

impl Changed {
    /// This world, borrowed.
    pub fn world(&self) -> World<'_> {
        World {
            config: &self.config,
            states: &self.states,
            routing: &self.routing,
        }
    }
}

/// Replays `sample` in `before` and `after`.
pub fn simulate(before: World<'_>, after: World<'_>, sample: &Sample) -> Simulation {
    let mut by_service: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut dc_now: BTreeMap<String, u64> = BTreeMap::new();
    let mut dc_after: BTreeMap<String, u64> = BTreeMap::new();
    for entry in &sample.networks {
        let tally = by_service.entry(&entry.service).or_default();
        let now = route(before, &entry.service, entry.network);
        let then = route(after, &entry.service, entry.network);
        tally.queries += entry.queries;
        if let Some(dc) = &now.first {
            *tally.now.entry(dc.clone()).or_default() += entry.queries;
            *dc_now.entry(dc.clone()).or_default() += entry.queries;
        }
        if let Some(dc) = &then.first {
            *tally.after.entry(dc.clone()).or_default() += entry.queries;
            *dc_after.entry(dc.clone()).or_default() += entry.queries;
        }
        if now.failed_open {
            tally.failed_open_now += entry.queries;
        }
        if then.failed_open {
            tally.failed_open += entry.queries;
            tally
                .failed_open_networks
                .push((entry.queries, entry.network));
        }
        if now.first != then.first {
            tally
                .moves
                .entry((now.first, then.first))
                .or_default()
                .push((entry.queries, entry.network));
        }
    }
    let projections = project(before, after, &dc_now, &dc_after);
    let services = by_service
        .into_iter()
        .map(|(service, tally)| tally.outcome(service, after, &projections))
        .collect();
    Simulation {
        sample_one_in: sample.sample_one_in,
        window: sample.window,
        sampled_queries: sample.networks.iter().map(|entry| entry.queries).sum(),
        services,
        projections,
    }
}

impl Simulation {
    /// Datacenters other than `except` that the change would newly put past a high watermark,
    /// as one line each: what the drain rail refuses.
    pub fn newly_past_high(&self, except: &str) -> Vec<String> {
        let mut res = Vec::new();
        for service in &self.services {
            for finding in &service.watermarks {
                if finding.newly && finding.past == "high" && finding.datacenter != except {
                    res.push(format!(
                        "service {}: {} would be at {:.0} % of capacity, past its high watermark ({:.0} %)",
                        service.service,
                        finding.datacenter,
                        finding.utilization_after * 100.0,
                        finding.high * 100.0
                    ));
                }
            }
        }
        res
    }
}

/// Where one sampled network's queries go in one world.
struct Routed {
    first: Option<String>,
    failed_open: bool,
}

/// Routes `network` for the service `service_id` in `world` as DNS would: located by
/// [`Client::locate`] at the network's address with the network's length as its ECS source
/// prefix, resolved by the world's table.
fn route(world: World<'_>, service_id: &str, network: IpNet) -> Routed {
    let Some(index) = world
        .config
        .services
        .iter()
        .position(|s| s.id == service_id)
    else {
        return Routed {
            first: None,
            failed_open: false,
        };
    };
    let service = ServiceId(u16::try_from(index).expect("service count is bounded"));
    let client = Client::locate(
        world.routing.base().geo(),
        network.addr(),
        network.prefix_len(),
    );
    // Only the first datacenter counts here, whatever the family.
    let decision = world.routing.resolve(service, &client, Family::Any);
    Routed {
        first: decision
            .datacenters
            .first()
            .map(|dc| world.config.datacenters[usize::from(dc.0)].name.clone()),
        failed_open: decision.failed_open,
    }
}

/// The first datacenter before and after (`None`: no answer).
type Route = (Option<String>, Option<String>);

#[derive(Default)]
struct Tally {
    queries: u64,
    now: BTreeMap<String, u64>,
    after: BTreeMap<String, u64>,
    /// By (from, to): each network's queries.
    moves: BTreeMap<Route, Vec<(u64, IpNet)>>,
    failed_open: u64,
    failed_open_now: u64,
    failed_open_networks: Vec<(u64, IpNet)>,
}

impl Tally {
    fn outcome(
        self,
        service: &str,
        after: World<'_>,
        projections: &[Projection],
    ) -> ServiceOutcome {
        let share = |n: u64| {
            if self.queries == 0 {
                0.0
            } else {
                n as f64 / self.queries as f64
            }
        };
        let mut names: Vec<&String> = self.now.keys().chain(self.after.keys()).collect();
        names.sort();
        names.dedup();
        let datacenters = names
            .into_iter()
            .map(|name| {
                let queries_now = self.now.get(name).copied().unwrap_or(0);
                let queries_after = self.after.get(name).copied().unwrap_or(0);
                DcShare {
                    datacenter: name.clone(),
                    queries_now,
                    queries_after,
                    share_now: share(queries_now),
                    share_after: share(queries_after),
                }
            })
            .collect();
        let mut moves: Vec<Move> = self
            .moves
            .into_iter()
            .map(|((from, to), networks)| Move {
                from,
                to,
                queries: networks.iter().map(|(n, _)| n).sum(),
                networks: examples(networks),
            })
            .collect();
        moves.sort_by_key(|m| std::cmp::Reverse(m.queries));
        let watermarks = after
            .config
            .services
            .iter()
            .find(|s| s.id == service)
            .map(|config| watermarks(after.config, config, projections))
            .unwrap_or_default();
        ServiceOutcome {
            service: service.to_owned(),
            queries: self.queries,
            datacenters,
            moves,
            watermarks,
            failed_open: self.failed_open,
            failed_open_networks: examples(self.failed_open_networks),
            failed_open_now: self.failed_open_now,
        }
    }
}

/// The largest few networks.
fn examples(mut networks: Vec<(u64, IpNet)>) -> Vec<IpNet> {
    networks.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    networks
        .into_iter()
        .take(EXAMPLE_NETWORKS)
        .map(|(_, network)| network)
        .collect()
}

/// Every datacenter of `after`: its reported load now, and that load moved by its load per
/// sampled query times the queries it gains or loses.
fn project(
    before: World<'_>,
    after: World<'_>,
    dc_now: &BTreeMap<String, u64>,
    dc_after: &BTreeMap<String, u64>,
) -> Vec<Projection> {
    let report_of = |world: World<'_>, name: &str| -> Option<ReportState> {
        let index = world.config.datacenter_index(name)?;
        world.states.get(index)?.report.clone()
    };
    // The fleet's load per sampled query, for a datacenter that serves none of the sample now.
    let (fleet_load, fleet_queries) = before
        .config
        .datacenters
        .iter()
        .filter_map(|dc| {
            let queries = dc_now.get(&dc.name).copied().unwrap_or(0);
            let report = report_of(before, &dc.name)?;
            (queries > 0 && report.load.is_finite()).then_some((report.load, queries))
        })
        .fold((0.0, 0u64), |(load, queries), (l, q)| {
            (load + l, queries + q)
        });
    let fleet_per_query = if fleet_queries > 0 {
        fleet_load / fleet_queries as f64
    } else {
        0.0
    };
    after
        .config
        .datacenters
        .iter()
        .map(|dc| {
            let queries_now = dc_now.get(&dc.name).copied().unwrap_or(0);
            let queries_after = dc_after.get(&dc.name).copied().unwrap_or(0);
            let report_now = report_of(before, &dc.name);
            let report_after = report_of(after, &dc.name);
            let load_now = report_now.as_ref().map(|r| r.load);
            let per_query = match load_now {
                Some(load) if queries_now > 0 => load / queries_now as f64,
                _ => fleet_per_query,
            };
            let load_after = report_after.as_ref().map(|report| {
                let delta = queries_after as f64 - queries_now as f64;
                (report.load + per_query * delta).max(0.0)
            });
            let capacity = report_after
                .as_ref()
                .map(|r| r.capacity)
                .filter(|c| c.is_finite());
            let utilization = |load: Option<f64>, capacity: Option<f64>| match (load, capacity) {
                (Some(load), Some(capacity)) if capacity > 0.0 => Some(load / capacity),
                _ => None,
            };
            Projection {
                datacenter: dc.name.clone(),
                queries_now,
                queries_after,
                load_now,
                load_after,
                capacity,
                utilization_now: utilization(
                    load_now,
                    report_now
                        .as_ref()
                        .map(|r| r.capacity)
                        .filter(|c| c.is_finite()),
                ),
                utilization_after: utilization(load_after, capacity),
            }
        })
        .collect()
}

/// The datacenters of `service` whose projected utilization is past its watermarks.
fn watermarks(
    config: &Config,
    service: &ServiceConfig,
    projections: &[Projection],
) -> Vec<WatermarkFinding> {
    let marks = service.capacity;
    service
        .pools
        .iter()
        .filter_map(|pool| {
            let name = &config.datacenters[pool.datacenter].name;
            let projection = projections.iter().find(|p| p.datacenter == *name)?;
            let after = projection.utilization_after?;
            let past = if after > marks.high {
                "high"
            } else if after > marks.low {
                "low"
            } else {
                return None;
            };
            let mark = if past == "high" {
                marks.high
            } else {
                marks.low
            };
            Some(WatermarkFinding {
                datacenter: name.clone(),
                utilization_now: projection.utilization_now,
                utilization_after: after,
                low: marks.low,
                high: marks.high,
                past,
                newly: projection.utilization_now.is_none_or(|now| now <= mark),
            })
        })
        .collect()
}

/// `states` of `from`'s datacenters, carried over to `to`'s by name (a new datacenter has no
/// state), with per-service drains carried by service id.
fn carry_states(from: &Config, states: &[DcState], to: &Config) -> Vec<DcState> {
    to.datacenters
        .iter()
        .map(|dc| {
            let Some(state) = from
                .datacenter_index(&dc.name)
                .and_then(|index| states.get(index))
            else {
                return DcState::default();
            };
            let drained_services = state
                .drained_services
                .iter()
                .filter_map(|id| from.services.get(usize::from(id.0)))
                .filter_map(|service| to.services.iter().position(|s| s.id == service.id))
                .map(|index| ServiceId(u16::try_from(index).expect("bounded")))
                .collect();
            DcState {
                drained_services,
                ..state.clone()
            }
        })
        .collect()
}

fn apply_service(config: &mut Config, change: &ServiceChange) -> Result<(), WorldError> {
    let names: Vec<String> = config
        .datacenters
        .iter()
        .map(|dc| dc.name.clone())
        .collect();
    let service = config
        .services
        .iter_mut()
        .find(|s| s.id == change.service)
        .ok_or_else(|| WorldError(format!("no service {:?}", change.service)))?;
    if let Some(policy) = change.policy {
        service.policy = policy;
    }
    let Some(keep) = &change.pools else {
        return Ok(());
    };
    if keep.is_empty() {
        return Err(WorldError(format!(
            "service {:?}: pools must name at least one datacenter",
            change.service
        )));
    }
    for name in keep {
        if !service.pools.iter().any(|p| names[p.datacenter] == *name) {
            return Err(WorldError(format!(
                "service {:?} has no pool {name:?}",
                change.service
            )));
        }
    }
    // Old pool index -> new one, for the order and the rules, which hold pool indexes.
    let mut renumber = vec![None; service.pools.len()];
    let mut pools = Vec::new();
    for (index, pool) in service.pools.iter().enumerate() {
        if keep.contains(&names[pool.datacenter]) {
            renumber[index] = Some(pools.len());
            pools.push(pool.clone());
        }
    }
    let map =
        |indexes: &[usize]| -> Vec<usize> { indexes.iter().filter_map(|&i| renumber[i]).collect() };
    service.pools = pools;
    service.order = map(&service.order);
    for rule in service.overrides.iter_mut().chain(&mut service.geofences) {
        rule.pools = map(&rule.pools);
    }
    service.overrides.retain(|rule| !rule.pools.is_empty());
    service.geofences.retain(|rule| !rule.pools.is_empty());
    Ok(())
}

fn apply_datacenter(
    config: &Config,
    states: &mut [DcState],
    change: &DcChange,
) -> Result<(), WorldError> {
    let index = config
        .datacenter_index(&change.datacenter)
        .ok_or_else(|| WorldError(format!("no datacenter {:?}", change.datacenter)))?;
    for (what, value) in [("load", change.load), ("capacity", change.capacity)] {
        if value.is_some_and(|v| !v.is_finite() || v < 0.0) {
            return Err(WorldError(format!(
                "datacenter {:?}: {what} must be a finite number at least 0",
                change.datacenter
            )));
        }
    }
    let service = match &change.service {
        Some(id) => Some(
            config
                .services
                .iter()
                .position(|s| s.id == *id)
                .map(|i| ServiceId(u16::try_from(i).expect("bounded")))
                .ok_or_else(|| WorldError(format!("no service {id:?}")))?,
        ),
        None => None,
    };
    let state = &mut states[index];
    if let Some(drained) = change.drained {
        match service {
            Some(service) => {
                state.drained_services.retain(|s| *s != service);
                if drained {
                    state.drained_services.push(service);
                }
            }
            None => state.drained = drained,
        }
    }
    if change.healthy.is_none() && change.load.is_none() && change.capacity.is_none() {
        return Ok(());
    }
    let report = state.report.get_or_insert_with(|| ReportState {
        healthy: true,
        // Said nothing of its capacity: treated as empty, not as full.
        capacity: f64::INFINITY,
        load: 0.0,
        latency_ms: BTreeMap::new(),
        cost: None,
        service_latency_ms: None,
        age: Duration::ZERO,
        ttl: config.control.report_ttl,
    });
    if let Some(healthy) = change.healthy {
        // A fresh report saying so.
        report.healthy = healthy;
        report.age = Duration::ZERO;
        state.unverified = false;
    }
    if let Some(load) = change.load {
        report.load = load;
    }
    if let Some(capacity) = change.capacity {
        report.capacity = capacity;
    }
    Ok(())
}
