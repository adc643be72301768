//! The live routing table: base rankings with every datacenter's current state applied.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{AllDown, Config, DatacenterConfig, Policy, ServiceConfig};
use crate::geo::Location;

use super::base::{self, BaseTable, Interner};
use super::policy;
use super::{BUCKETS, Basis, Client, DcId, Decision, RankingId, Scope, ServiceId, bucket};

/// What the control plane knows about one datacenter, as of the time the table is built.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DcState {
    /// Drained by an operator for every service.
    pub drained: bool,
    /// Drained by an operator for these services only.
    pub drained_services: Vec<ServiceId>,
    /// The latest report, if any.
    pub report: Option<ReportState>,
    /// Restored from the store after a restart and not yet confirmed by a fresh report.
    pub unverified: bool,
}

/// A datacenter's latest report, with its age at build time.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportState {
    /// Whether the datacenter says it can serve.
    pub healthy: bool,
    /// Capacity, in the datacenter's own units.
    pub capacity: f64,
    /// Current load, in the same units.
    pub load: f64,
    /// Measured latency from client regions (country or continent code) in milliseconds.
    pub latency_ms: BTreeMap<String, f64>,
    /// Relative cost of serving from here.
    pub cost: Option<f64>,
    /// How old the report is.
    pub age: Duration,
    /// How long the report stays fresh.
    pub ttl: Duration,
}

impl ReportState {
    /// Load over capacity; a datacenter that reports no capacity is infinitely full, whatever
    /// its load: it has said it can take nothing, so capacity-aware policies send it no one.
    pub fn utilization(&self) -> f64 {
        if self.capacity > 0.0 {
            self.load / self.capacity
        } else {
            f64::INFINITY
        }
    }
}

/// Where a datacenter stands for one service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Standing {
    /// A fresh report says healthy.
    Healthy,
    /// Never reported, and not required to.
    Unreported,
    /// The report is past its TTL but within the service's grace period; its last known state
    /// (healthy) is kept.
    Stale {
        /// Time since the report.
        age: Duration,
    },
    /// Drained by an operator.
    Drained,
    /// The latest report (fresh or within grace) says unhealthy.
    ReportedDown,
    /// The report is older than its TTL plus the grace period.
    StalePastGrace {
        /// Time since the report.
        age: Duration,
    },
    /// Required to report and never did.
    NoReport,
}

impl Standing {
    /// Whether the datacenter may receive clients.
    pub fn is_eligible(&self) -> bool {
        matches!(
            self,
            Standing::Healthy | Standing::Unreported | Standing::Stale { .. }
        )
    }

    /// Where `dc` stands for `service`, given its state.
    pub fn of(
        dc: &DatacenterConfig,
        state: &DcState,
        service: ServiceId,
        service_config: &ServiceConfig,
    ) -> Standing {
        let drained = state.drained || state.drained_services.contains(&service);
        Standing::judge(dc, state, drained, service_config.staleness_grace)
    }

    /// Where `dc` stands on its own (drained for every service or not), with `grace` for stale
    /// reports: for uses beyond one service, such as the user directory.
    pub fn of_datacenter(dc: &DatacenterConfig, state: &DcState, grace: Duration) -> Standing {
        Standing::judge(dc, state, state.drained, grace)
    }

    fn judge(dc: &DatacenterConfig, state: &DcState, drained: bool, grace: Duration) -> Standing {
        if drained {
            return Standing::Drained;
        }
        let Some(report) = &state.report else {
            return if dc.require_report {
                Standing::NoReport
            } else {
                Standing::Unreported
            };
        };
        let age = report.age;
        if age <= report.ttl {
            if report.healthy {
                Standing::Healthy
            } else {
                Standing::ReportedDown
            }
        } else if age <= report.ttl + grace {
            if report.healthy {
                Standing::Stale { age }
            } else {
                Standing::ReportedDown
            }
        } else {
            Standing::StalePastGrace { age }
        }
    }
}

/// Rankings with live state applied, for every service.
#[derive(Debug)]
pub struct RoutingTable {
    base: Arc<BaseTable>,
    services: Vec<LiveService>,
}

#[derive(Debug)]
pub(super) struct LiveService {
    /// Distinct effective rankings.
    pub(super) rankings: Vec<Box<[DcId]>>,
    /// Whether each ranking is a fail-open one.
    failed_open: Vec<bool>,
    /// Each base ranking, filtered.
    by_base: Vec<RankingId>,
    /// `nearest-with-capacity`: per base ranking, `BUCKETS` rankings with spill applied.
    by_base_bucket: Vec<RankingId>,
    /// `nearest-with-capacity`: whether the base ranking's answer depends on the bucket.
    spilling: Vec<bool>,
    /// `metric`: per cell.
    by_cell: Vec<RankingId>,
    /// `nearest-with-capacity`: which datacenters are over their high watermark (with
    /// hysteresis), by `DcId`; carried into the next table.
    pub(super) overloaded: Vec<bool>,
}

impl RoutingTable {
    /// Applies `states` (indexed by `DcId`) to `base`. `previous` is the table being replaced,
    /// if it was built from the same base: its overload flags give the watermarks hysteresis.
    pub fn build(
        base: Arc<BaseTable>,
        config: &Config,
        states: &[DcState],
        previous: Option<&RoutingTable>,
    ) -> RoutingTable {
        let services = config
            .services
            .iter()
            .enumerate()
            .map(|(i, service)| {
                let id = ServiceId(i as u16);
                let previous = previous
                    .filter(|p| Arc::ptr_eq(&p.base, &base))
                    .map(|p| &p.services[i].overloaded[..]);
                build_service(&base, config, service, id, states, previous)
            })
            .collect();
        RoutingTable { base, services }
    }

    /// Ranks the datacenters of `service` for `client`.
    ///
    /// # Panics
    ///
    /// If `service` or the client's cell does not belong to the table's snapshot: both come from
    /// the same snapshot, so that would be a bug in the caller.
    pub fn resolve(&self, service: ServiceId, client: &Client) -> Decision<'_> {
        let base = self.base.service(service);
        let live = &self.services[usize::from(service.0)];
        let (ranking, basis, scope) = if let Some((net, id)) = base.network_override(client.ip) {
            (
                live.by_base[id.0 as usize],
                Basis::Override,
                Scope::Prefix(net.prefix_len()),
            )
        } else {
            match (base.policy, client.cell) {
                (Policy::Failover, _) => (
                    live.by_base[base.ordered.0 as usize],
                    Basis::Order,
                    Scope::Global,
                ),
                (Policy::Weighted, _) => {
                    let id = base.by_bucket[bucket(client.network_key)];
                    (live.by_base[id.0 as usize], Basis::Weight, Scope::Network)
                }
                (Policy::Nearest, Some(cell)) => {
                    let id = base.by_cell[cell.0 as usize];
                    (live.by_base[id.0 as usize], Basis::Distance, Scope::Geo)
                }
                (Policy::NearestWithCapacity, Some(cell)) => {
                    let id = base.by_cell[cell.0 as usize].0 as usize;
                    let ranking = live.by_base_bucket[id * BUCKETS + bucket(client.network_key)];
                    let scope = if live.spilling[id] {
                        Scope::GeoAndNetwork
                    } else {
                        Scope::Geo
                    };
                    (ranking, Basis::Distance, scope)
                }
                (Policy::Metric, Some(cell)) => {
                    (live.by_cell[cell.0 as usize], Basis::Score, Scope::Geo)
                }
                (_, None) => (
                    live.by_base[base.ordered.0 as usize],
                    Basis::NoLocation,
                    Scope::Geo,
                ),
            }
        };
        Decision {
            ranking,
            datacenters: &live.rankings[ranking.0 as usize],
            basis,
            scope,
            failed_open: live.failed_open[ranking.0 as usize],
        }
    }

    /// The distinct rankings of `service`, indexed by [`RankingId`], for preparing answers.
    pub fn rankings(&self, service: ServiceId) -> &[Box<[DcId]>] {
        &self.services[usize::from(service.0)].rankings
    }

    /// Whether `dc` is over its high watermark for `service` (`nearest-with-capacity`).
    pub fn is_overloaded(&self, service: ServiceId, dc: DcId) -> bool {
        self.services[usize::from(service.0)]
            .overloaded
            .get(usize::from(dc.0))
            .copied()
            .unwrap_or(false)
    }

    /// The base table this table applies state to.
    pub fn base(&self) -> &Arc<BaseTable> {
        &self.base
    }
}

impl From<u32> for RankingId {
    fn from(id: u32) -> Self {
        RankingId(id)
    }
}

/// Builds one service's live rankings.
fn build_service(
    base: &BaseTable,
    config: &Config,
    service: &ServiceConfig,
    id: ServiceId,
    states: &[DcState],
    previous_overload: Option<&[bool]>,
) -> LiveService {
    let base_service = base.service(id);
    let eligible: Vec<bool> = config
        .datacenters
        .iter()
        .zip(states)
        .map(|(dc, state)| Standing::of(dc, state, id, service).is_eligible())
        .collect();
    let overloaded: Vec<bool> = states
        .iter()
        .enumerate()
        .map(|(i, state)| {
            let was = previous_overload
                .and_then(|p| p.get(i))
                .copied()
                .unwrap_or(false);
            let utilization = state.report.as_ref().map_or(0.0, ReportState::utilization);
            policy::still_overloaded(was, utilization, &service.capacity)
        })
        .collect();
    let mut interner: Interner<RankingId> = Interner::default();
    let mut failed_open = Vec::new();
    let mut finish = |ranking: &[DcId], interner: &mut Interner<RankingId>| {
        let (effective, fail_open) = filter(ranking, &eligible, service.all_down);
        let id = interner.intern(effective);
        if failed_open.len() <= id.0 as usize {
            failed_open.push(fail_open);
        }
        id
    };
    let by_base: Vec<RankingId> = base_service
        .rankings
        .iter()
        .map(|ranking| finish(ranking, &mut interner))
        .collect();
    let (mut by_base_bucket, mut spilling) = (Vec::new(), Vec::new());
    if service.policy == Policy::NearestWithCapacity {
        let shares: Vec<usize> = states
            .iter()
            .map(|state| {
                let utilization = state.report.as_ref().map_or(0.0, ReportState::utilization);
                policy::spill_buckets(utilization, &service.capacity)
            })
            .collect();
        for ranking in &base_service.rankings {
            let candidates: Vec<DcId> = ranking
                .iter()
                .copied()
                .filter(|dc| eligible[usize::from(dc.0)])
                .collect();
            let spills = candidates
                .iter()
                .any(|dc| !overloaded[usize::from(dc.0)] && shares[usize::from(dc.0)] > 0);
            spilling.push(spills);
            for b in 0..BUCKETS {
                let spilled = policy::with_capacity(&candidates, &overloaded, &shares, b);
                // An empty candidate list falls back like any other ranking.
                let source = if spilled.is_empty() {
                    &ranking[..]
                } else {
                    &spilled[..]
                };
                by_base_bucket.push(finish(source, &mut interner));
            }
        }
    }
    let by_cell: Vec<RankingId> = if service.policy == Policy::Metric {
        base.cells
            .iter()
            .map(|cell| {
                let ranking = metric_ranking(base, service, states, cell);
                finish(&ranking, &mut interner)
            })
            .collect()
    } else {
        Vec::new()
    };
    LiveService {
        rankings: interner.rankings,
        failed_open,
        by_base,
        by_base_bucket,
        spilling,
        by_cell,
        overloaded,
    }
}

/// Drops ineligible datacenters; when none is left, applies the service's all-down rule.
fn filter(ranking: &[DcId], eligible: &[bool], all_down: AllDown) -> (Vec<DcId>, bool) {
    let kept: Vec<DcId> = ranking
        .iter()
        .copied()
        .filter(|dc| eligible[usize::from(dc.0)])
        .collect();
    match (kept.is_empty(), all_down) {
        (false, _) => (kept, false),
        (true, AllDown::FailOpen) => (ranking.to_vec(), true),
        (true, AllDown::ServFail) => (Vec::new(), false),
    }
}

/// The `metric` ranking of one cell: by score, then geofence and place overrides.
pub(super) fn metric_ranking(
    base: &BaseTable,
    service: &ServiceConfig,
    states: &[DcState],
    cell: &Location,
) -> Vec<DcId> {
    let mut scored: Vec<(f64, usize, DcId)> = service
        .order
        .iter()
        .enumerate()
        .map(|(position, &pool)| {
            let dc = policy::dc_id(&service.pools[pool]);
            let score = metric_score(base, service, states, cell, dc);
            (score, position, dc)
        })
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let ranking = scored.into_iter().map(|(_, _, dc)| dc).collect();
    base::apply_place_rules(service, ranking, cell)
}

/// `latency_weight × latency + cost_weight × cost` for a client at `cell` (lower is better).
/// Latency is the datacenter's measurement for the client's country, else its continent, else
/// an estimate from distance.
pub(super) fn metric_score(
    base: &BaseTable,
    service: &ServiceConfig,
    states: &[DcState],
    cell: &Location,
    dc: DcId,
) -> f64 {
    let report = states[usize::from(dc.0)].report.as_ref();
    let measured = report.and_then(|r| {
        let by_country = cell.country.and_then(|c| r.latency_ms.get(c.as_str()));
        let by_continent = cell.continent.and_then(|c| r.latency_ms.get(c.code()));
        by_country.or(by_continent).copied()
    });
    let latency = measured.unwrap_or_else(|| {
        let distance = cell
            .coordinates
            .distance_km(&base.dc_coordinates[usize::from(dc.0)]);
        policy::estimated_latency_ms(distance)
    });
    let cost = report.and_then(|r| r.cost).unwrap_or(0.0);
    service.metric.latency * latency + service.metric.cost * cost
}
