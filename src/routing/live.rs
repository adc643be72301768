//! The live routing table: base rankings and decision maps with every datacenter's current
//! state applied.
//!
//! A state change rebuilds only what it touches: only the services whose pool holds a datacenter
//! the change touched are judged again (see `changes.rs`; the others are carried over whole),
//! a service's decision map is rebuilt only when its inputs (eligible datacenters, full
//! datacenters, measured latencies) changed, and services with equal inputs share one map.
//! Capacity spill is a thin layer over the map: a load report that moves no datacenter across a
//! watermark changes only the spill shares.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::config::{AllDown, ClientRule, Config, DatacenterConfig, Policy, ServiceConfig};
use crate::geo::{Location, Region, UnitVector};

use super::balance::{self, Ramp};
use super::base::{self, BaseId, BaseTable, Interner};
use super::changes;
use super::classes::{self, Answering, Usage};
use super::geomap::{Candidate, Context, GeoMap, MapInputs, MapStats};
use super::policy;
use super::toggles::{Toggle, Toggles};
use super::{Basis, Client, DcId, Decision, Family, RankingId, Scope, ServiceId, bucket};

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
    /// How long ago the datacenter became eligible again (its first healthy report, after it
    /// was down, stale past grace or never reported; or the lifting of its drain), when that
    /// is recent enough to matter; slow start ramps from it.
    pub back_for: Option<Duration>,
    /// The same for the lifting of a drain of one service.
    pub back_for_services: Vec<(ServiceId, Duration)>,
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
    /// The datacenter's own service latency (p99), milliseconds.
    pub service_latency_ms: Option<f64>,
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
    /// The feature toggles it was built under.
    toggles: Toggles,
    /// Shared with the previous table where nothing the service depends on changed.
    services: Vec<Arc<LiveService>>,
    /// The datacenter states it was built from: the next build compares its own with them to
    /// judge only the services a change can touch.
    states: Vec<DcState>,
}

#[derive(Debug)]
pub(super) struct LiveService {
    /// Distinct effective rankings; answers are prepared per ranking.
    pub(super) rankings: Vec<Box<[DcId]>>,
    /// Whether each ranking is a fail-open one.
    failed_open: Vec<bool>,
    /// Each base ranking (configured order, weight buckets, overrides), filtered, with full
    /// datacenters last and their spill.
    by_base: Vec<Choice>,
    /// `nearest`, `nearest-with-capacity`, `metric`: the decision map and what each of its
    /// rankings becomes.
    geo: Option<GeoPart>,
    /// Capacity-aware policies: which datacenters are over their high watermark (with
    /// hysteresis), by `DcId`; carried into the next table.
    pub(super) overloaded: Vec<bool>,
    /// `max_service_latency_ms`: which datacenters are over the limit (with hysteresis), by
    /// `DcId`; carried into the next table.
    pub(super) slow: Vec<bool>,
    /// How many hash buckets each datacenter sends on (capacity spill, slow start), by `DcId`.
    spill: Vec<u16>,
    /// Slow start: where each datacenter is in its ramp, by `DcId`.
    ramps: Vec<Option<Ramp>>,
    /// Which datacenters may receive clients, by `DcId`.
    eligible: Vec<bool>,
}

/// A service's decision map with the live choice of each of its rankings.
#[derive(Debug)]
struct GeoPart {
    /// The map's inputs, with their hash: the key a rebuild finds the map by.
    key: MapKey,
    map: Arc<GeoMap>,
    /// By the map's ranking index.
    choices: Vec<Choice>,
    /// How long building the map took (zero when it was reused or shared).
    build_time: Duration,
}

/// What one ranking answers.
#[derive(Debug)]
enum Choice {
    /// The same for every client network.
    Fixed(RankingId),
    /// Capacity spill: the first of these datacenters that keeps the client's hash bucket
    /// comes first (the first one if none does).
    Split(Box<[(DcId, RankingId)]>),
}

/// A service's decision map, described for `check-config`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MapReport {
    /// Sizes.
    pub stats: MapStats,
    /// Build time, zero when the map was shared with another service or reused.
    pub build_time: Duration,
}

impl RoutingTable {
    /// Applies `states` (indexed by `DcId`) to `base`. `previous` is the table being replaced:
    /// its decision maps are reused where their inputs did not change (when it used the same
    /// geo database), and if it was built from the same base, its overload flags give the
    /// watermarks hysteresis and its unchanged services are kept whole.
    pub fn build(
        base: Arc<BaseTable>,
        config: &Config,
        states: &[DcState],
        previous: Option<&RoutingTable>,
    ) -> RoutingTable {
        RoutingTable::build_toggled(base, config, states, Toggles::default(), previous)
    }

    /// As [`RoutingTable::build`], under `toggles`: a capability switched off changes the
    /// inputs of the maps it touches, which are rebuilt (or taken from an earlier table with
    /// the same inputs).
    pub fn build_toggled(
        base: Arc<BaseTable>,
        config: &Config,
        states: &[DcState],
        toggles: Toggles,
        previous: Option<&RoutingTable>,
    ) -> RoutingTable {
        RoutingTable::build_from(base, config, states, toggles, previous, true)
    }

    /// As [`RoutingTable::build_toggled`]; with `incremental`, services that no change from
    /// `previous`'s states can touch (see `changes.rs`) are carried over without being judged.
    /// Without it every service is judged again: the reference the property test compares
    /// the incremental build with.
    pub(super) fn build_from(
        base: Arc<BaseTable>,
        config: &Config,
        states: &[DcState],
        toggles: Toggles,
        previous: Option<&RoutingTable>,
        incremental: bool,
    ) -> RoutingTable {
        // Maps depend on the geo database and their inputs only, so they outlive reloads that
        // keep the database; everything else is kept only within one configuration and one
        // set of toggles.
        let same_geo = previous.filter(|p| Arc::ptr_eq(&p.base.geo, &base.geo));
        let previous = previous.filter(|p| Arc::ptr_eq(&p.base, &base) && p.toggles == toggles);
        let affected = match previous {
            Some(p) if incremental && p.states.len() == states.len() => {
                changes::affected(&base, config, &p.states, states, toggles)
            }
            _ => vec![true; config.services.len()],
        };
        let facts: Vec<Option<ServiceFacts>> = config
            .services
            .iter()
            .enumerate()
            .zip(&affected)
            .map(|((i, service), affected)| {
                if !affected {
                    return None;
                }
                let id = ServiceId(i as u16);
                let before = previous.map(|p| &*p.services[i]);
                Some(ServiceFacts::judge(
                    &base, config, service, id, states, toggles, before,
                ))
            })
            .collect();
        let maps = build_maps(&base, &facts, same_geo);
        let services = config
            .services
            .iter()
            .enumerate()
            .zip(facts)
            .zip(maps)
            .map(|(((i, service), facts), map)| {
                let before = previous.map(|p| &p.services[i]);
                let Some(facts) = facts else {
                    return before
                        .expect("only services of a previous table are carried over")
                        .clone();
                };
                if let Some(before) = before
                    && before.unchanged(&facts, map.as_ref().map(|(m, _)| m))
                {
                    return before.clone();
                }
                Arc::new(build_service(
                    &base,
                    service,
                    ServiceId(i as u16),
                    facts,
                    map,
                ))
            })
            .collect();
        RoutingTable {
            base,
            toggles,
            services,
            states: states.to_vec(),
        }
    }

    /// Ranks the datacenters of `service` for `client`; the ECS scope is the widest network
    /// over which the reply of `family` carries the same records.
    ///
    /// # Panics
    ///
    /// If `service` does not belong to the table's snapshot, or the client was located in
    /// another geo database: both come from the same snapshot, so that would be a bug in the
    /// caller.
    pub fn resolve(&self, service: ServiceId, client: &Client, family: Family) -> Decision<'_> {
        let base = self.base.service(service);
        let live = &self.services[usize::from(service.0)];
        let b = bucket(client.network_key);
        let overrides = self.toggles.overrides();
        let network_override = if overrides {
            base.network_override(client.ip)
        } else {
            None
        };
        let (ranking, basis, scope, prefix_len) = if let Some((net, id)) = network_override {
            let prefix = net.prefix_len();
            match live.pick(&live.by_base[id.0 as usize], b) {
                (id, false) => (id, Basis::Override, Scope::Prefix(prefix), prefix),
                // Split by the hashed network too: the answer holds only where both hold.
                (id, true) if client.network_prefix > prefix => {
                    (id, Basis::Override, Scope::Network, client.network_prefix)
                }
                (id, true) => (id, Basis::Override, Scope::Prefix(prefix), prefix),
            }
        } else {
            match base.policy {
                Policy::Failover | Policy::Cascade => {
                    match live.pick(&live.by_base[base.ordered.0 as usize], b) {
                        (id, false) => (id, Basis::Order, Scope::Global, 0),
                        (id, true) => (id, Basis::Order, Scope::Network, client.network_prefix),
                    }
                }
                Policy::Weighted => {
                    let id = base.by_bucket[b];
                    (
                        live.pick(&live.by_base[id.0 as usize], b).0,
                        Basis::Weight,
                        Scope::Network,
                        client.network_prefix,
                    )
                }
                Policy::Nearest
                | Policy::NearestWithCapacity
                | Policy::Metric
                | Policy::LeastLoaded => {
                    let part = live.geo.as_ref().expect("geographic services have a map");
                    let answer = part
                        .map
                        .resolve(&self.base.geo, client.ip, client.hit(), family);
                    let basis = match (client.cell, self.toggles.policy(base.policy)) {
                        (None, _) => Basis::NoLocation,
                        (Some(_), Policy::Metric) => Basis::Score,
                        (Some(_), Policy::LeastLoaded) => Basis::Load,
                        (Some(_), _) => Basis::Distance,
                    };
                    match live.pick(&part.choices[answer.rank as usize], b) {
                        (id, false) => (id, basis, Scope::Geo, answer.prefix_len),
                        (id, true) => {
                            // RFC 7871 §7.2.1: the answer holds only where both the place
                            // and the hashed network are the client's.
                            let prefix = answer.prefix_len.max(client.network_prefix);
                            (id, basis, Scope::GeoAndNetwork, prefix)
                        }
                    }
                }
            }
        };
        let prefix_len = if overrides {
            narrow_for_overrides(&base.by_network, client.ip, prefix_len)
        } else {
            prefix_len
        };
        Decision {
            ranking,
            datacenters: &live.rankings[ranking.0 as usize],
            basis,
            scope,
            prefix_len,
            failed_open: live.failed_open[ranking.0 as usize],
        }
    }

    /// Works out, for every decision map that has not done so yet, the widest networks of one
    /// ranking where the geo database's trie summaries list quads rather than cells (see
    /// `GeoMap::widen`): until then a map's ECS scopes are the summaries' (correct, sometimes
    /// narrower). On every core, like map builds; returns how many maps it widened.
    /// `check-config` does not need it; a publisher does it in the background once a snapshot
    /// is published.
    pub fn widen_scopes(&self) -> usize {
        self.widen_scopes_while(&|| true)
    }

    /// As [`RoutingTable::widen_scopes`], but stops before the next map once `wanted` turns
    /// false (the table was replaced: its maps that the new one shares are widened there, and
    /// the rest are not worth the work nor the memory they keep alive).
    pub fn widen_scopes_while(&self, wanted: &(dyn Fn() -> bool + Sync)) -> usize {
        let mut maps: Vec<&Arc<GeoMap>> = Vec::new();
        // By address: a scan of `maps` per service cost more than a report's rebuild.
        let mut seen: HashSet<*const GeoMap> = HashSet::new();
        for part in self.services.iter().filter_map(|s| s.geo.as_ref()) {
            if seen.insert(Arc::as_ptr(&part.map)) {
                maps.push(&part.map);
            }
        }
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(maps.len())
            .max(1);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let geo = &self.base.geo;
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut widened = 0;
                        while wanted() {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(map) = maps.get(i) else { break };
                            widened += usize::from(map.widen(geo));
                        }
                        widened
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("widening does not panic"))
                .sum()
        })
    }

    /// The distinct rankings of `service`, indexed by [`RankingId`], for preparing answers.
    pub fn rankings(&self, service: ServiceId) -> &[Box<[DcId]>] {
        &self.services[usize::from(service.0)].rankings
    }

    /// Whether `dc` is over its high watermark for `service` (capacity-aware policies).
    pub fn is_overloaded(&self, service: ServiceId, dc: DcId) -> bool {
        self.services[usize::from(service.0)]
            .overloaded
            .get(usize::from(dc.0))
            .copied()
            .unwrap_or(false)
    }

    /// Whether `dc` is over the service latency limit of `service`.
    pub fn is_slow(&self, service: ServiceId, dc: DcId) -> bool {
        self.services[usize::from(service.0)]
            .slow
            .get(usize::from(dc.0))
            .copied()
            .unwrap_or(false)
    }

    /// Where `dc` is in its slow start for `service`, if ramping.
    pub fn ramp(&self, service: ServiceId, dc: DcId) -> Option<Ramp> {
        self.services[usize::from(service.0)]
            .ramps
            .get(usize::from(dc.0))
            .copied()
            .flatten()
    }

    /// How many of the [`BUCKETS`](super::BUCKETS) client-network buckets `dc` sends on for
    /// `service` (capacity spill and slow start).
    pub fn spill(&self, service: ServiceId, dc: DcId) -> usize {
        self.services[usize::from(service.0)]
            .spill
            .get(usize::from(dc.0))
            .map_or(0, |s| usize::from(*s))
    }

    /// The decision map of `service`, for `check-config`; `None` for policies without one.
    pub fn map_report(&self, service: ServiceId) -> Option<MapReport> {
        self.services[usize::from(service.0)]
            .geo
            .as_ref()
            .map(|part| MapReport {
                stats: part.map.stats(),
                build_time: part.build_time,
            })
    }

    /// The decision map of `service` with its inputs, to bring it up to date in tests.
    #[cfg(test)]
    pub(super) fn map_part(&self, service: ServiceId) -> Option<(&MapInputs, &GeoMap)> {
        self.services[usize::from(service.0)]
            .geo
            .as_ref()
            .map(|part| (&*part.key.inputs, &*part.map))
    }

    /// The decision map of `service`, to tell shared and reused maps apart in tests.
    #[cfg(test)]
    pub(super) fn map_of(&self, service: ServiceId) -> Option<&Arc<GeoMap>> {
        self.services[usize::from(service.0)]
            .geo
            .as_ref()
            .map(|part| &part.map)
    }

    /// Everything `service` was decided as, spelled out (maps by their entries), to compare
    /// tables built in different ways in tests.
    #[cfg(test)]
    pub(super) fn decided(&self, service: ServiceId) -> String {
        let live = &self.services[usize::from(service.0)];
        let geo = live.geo.as_ref().map(|part| {
            let rankings = &part.map.rankings;
            (
                &part.key.inputs,
                part.map.entries(),
                rankings,
                &part.choices,
            )
        });
        format!(
            "{:?}",
            (
                &live.rankings,
                &live.failed_open,
                &live.by_base,
                geo,
                (&live.overloaded, &live.slow, &live.spill),
                (&live.ramps, &live.eligible),
            )
        )
    }

    /// Each datacenter's state (by `DcId`) this table was built from.
    pub fn states(&self) -> &[DcState] {
        &self.states
    }

    /// The feature toggles this table was built under.
    pub fn toggles(&self) -> Toggles {
        self.toggles
    }

    /// The base table this table applies state to.
    pub fn base(&self) -> &Arc<BaseTable> {
        &self.base
    }

    /// Whether `service` has exactly the rankings it had in `other` (a table it was built
    /// from), so that what was prepared for them can be kept.
    pub fn same_rankings(&self, other: &RoutingTable, service: ServiceId) -> bool {
        let i = usize::from(service.0);
        Arc::ptr_eq(&self.base, &other.base)
            && other
                .services
                .get(i)
                .is_some_and(|o| Arc::ptr_eq(o, &self.services[i]))
    }
}

impl LiveService {
    /// Whether this service would be built the same from `facts` and `map`.
    fn unchanged(&self, facts: &ServiceFacts, map: Option<&Arc<GeoMap>>) -> bool {
        let same_map = match (&self.geo, map) {
            (Some(part), Some(map)) => Arc::ptr_eq(&part.map, map),
            (None, None) => true,
            _ => false,
        };
        same_map
            && self.eligible == facts.eligible
            && self.overloaded == facts.overloaded
            && self.slow == facts.slow
            && self.spill == facts.spill
            && self.ramps == facts.ramps
    }

    /// The ranking `choice` gives clients in hash bucket `b`, and whether it depended on the
    /// bucket.
    fn pick(&self, choice: &Choice, b: usize) -> (RankingId, bool) {
        match choice {
            Choice::Fixed(id) => (*id, false),
            Choice::Split(fronts) => {
                let id = fronts
                    .iter()
                    .find(|(dc, _)| b >= usize::from(self.spill[usize::from(dc.0)]))
                    .unwrap_or(&fronts[0])
                    .1;
                (id, true)
            }
        }
    }
}

impl From<u32> for RankingId {
    fn from(id: u32) -> Self {
        RankingId(id)
    }
}

/// What the live state means for one service: eligibility, capacity, and its map's inputs.
struct ServiceFacts {
    eligible: Vec<bool>,
    overloaded: Vec<bool>,
    slow: Vec<bool>,
    /// Over the high watermark or the latency limit: ranked last, takes no spill.
    full: Vec<bool>,
    spill: Vec<u16>,
    ramps: Vec<Option<Ramp>>,
    inputs: Option<MapKey>,
}

/// A decision map's inputs with their hash, computed once: a rebuild looks maps up by their
/// inputs, and hashing every service's inputs again costs more than judging the changed ones.
#[derive(Debug, Clone)]
struct MapKey {
    inputs: Arc<MapInputs>,
    hash: u64,
}

impl MapKey {
    /// The key of `inputs`, sharing the inputs and hash of `previous` (the service's map in
    /// the table being replaced) when they are equal.
    fn of(inputs: MapInputs, previous: Option<&GeoPart>) -> MapKey {
        if let Some(previous) = previous
            && *previous.key.inputs == inputs
        {
            return previous.key.clone();
        }
        let mut hasher = std::hash::DefaultHasher::new();
        inputs.hash(&mut hasher);
        MapKey {
            inputs: Arc::new(inputs),
            hash: hasher.finish(),
        }
    }
}

impl Hash for MapKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for MapKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
            && (Arc::ptr_eq(&self.inputs, &other.inputs) || self.inputs == other.inputs)
    }
}

impl Eq for MapKey {}

impl ServiceFacts {
    fn judge(
        base: &BaseTable,
        config: &Config,
        service: &ServiceConfig,
        id: ServiceId,
        states: &[DcState],
        toggles: Toggles,
        previous: Option<&LiveService>,
    ) -> ServiceFacts {
        let policy = toggles.policy(service.policy);
        // Only the service's own datacenters count, so that a report from another one leaves
        // the service as it was.
        let mut in_pool = vec![false; states.len()];
        for pool in &service.pools {
            in_pool[pool.datacenter] = true;
        }
        let eligible: Vec<bool> = config
            .datacenters
            .iter()
            .zip(states)
            .enumerate()
            .map(|(i, (dc, state))| {
                in_pool[i] && Standing::of(dc, state, id, service).is_eligible()
            })
            .collect();
        let capacity = policy.uses_capacity();
        // Spill between the watermarks; `least-loaded` sends everyone to the least loaded one
        // instead, and only skips full ones.
        let spills = policy != Policy::LeastLoaded;
        let slow_start = toggles.is_on(Toggle::SlowStart);
        let utilization =
            |state: &DcState| state.report.as_ref().map_or(0.0, ReportState::utilization);
        let was = |flags: Option<&Vec<bool>>, i: usize| {
            flags.and_then(|p| p.get(i)).copied().unwrap_or(false)
        };
        let overloaded: Vec<bool> = states
            .iter()
            .enumerate()
            .map(|(i, state)| {
                let was = was(previous.map(|p| &p.overloaded), i);
                capacity
                    && in_pool[i]
                    && policy::still_overloaded(was, utilization(state), &service.capacity)
            })
            .collect();
        let slow: Vec<bool> = states
            .iter()
            .enumerate()
            .map(|(i, state)| {
                let was = was(previous.map(|p| &p.slow), i);
                let latency = state.report.as_ref().and_then(|r| r.service_latency_ms);
                in_pool[i]
                    && balance::still_slow(
                        was,
                        latency,
                        service.max_service_latency_ms,
                        service.capacity.hysteresis,
                    )
            })
            .collect();
        let full: Vec<bool> = overloaded
            .iter()
            .zip(&slow)
            .map(|(o, s)| *o || *s)
            .collect();
        let ramps: Vec<Option<Ramp>> = states
            .iter()
            .enumerate()
            .map(|(i, state)| {
                (slow_start && in_pool[i] && eligible[i])
                    .then(|| balance::slow_start(service, id, state).map(|(ramp, _)| ramp))
                    .flatten()
            })
            .collect();
        let spill: Vec<u16> = states
            .iter()
            .enumerate()
            .map(|(i, state)| {
                let by_load = if capacity && spills && in_pool[i] {
                    policy::spill_buckets(utilization(state), &service.capacity)
                } else {
                    0
                };
                let by_ramp = ramps[i].map_or(0, |r| r.spill_buckets());
                by_load.max(by_ramp) as u16
            })
            .collect();
        let inputs = policy.is_geographic().then(|| {
            let inputs = map_inputs(base, service, toggles, states, &eligible, &full, &spill);
            MapKey::of(inputs, previous.and_then(|p| p.geo.as_ref()))
        });
        ServiceFacts {
            eligible,
            overloaded,
            slow,
            full,
            spill,
            ramps,
            inputs,
        }
    }
}

/// The decision map of every service that was judged (`None` for those carried over): reused
/// from `previous` when its inputs did not change, shared between services with equal inputs,
/// otherwise built (in parallel).
fn build_maps(
    base: &BaseTable,
    facts: &[Option<ServiceFacts>],
    previous: Option<&RoutingTable>,
) -> Vec<Option<(Arc<GeoMap>, Duration)>> {
    let mut known: HashMap<MapKey, Arc<GeoMap>> = HashMap::new();
    if let Some(previous) = previous {
        for part in previous.services.iter().filter_map(|s| s.geo.as_ref()) {
            known.insert(part.key.clone(), part.map.clone());
        }
    }
    // Each new map with the previous map of the first service that wants it: the map is
    // brought up to date from there when the change allows, rather than built again.
    let mut wanted: Vec<(MapKey, Option<&GeoPart>)> = Vec::new();
    let mut seen: HashSet<MapKey> = HashSet::new();
    for (i, key) in facts
        .iter()
        .enumerate()
        .filter_map(|(i, f)| Some((i, f.as_ref()?.inputs.as_ref()?)))
    {
        if !known.contains_key(key) && seen.insert(key.clone()) {
            let from = previous
                .and_then(|p| p.services.get(i))
                .and_then(|s| s.geo.as_ref());
            wanted.push((key.clone(), from));
        }
    }
    // Distinct maps are independent: build them on every core. Routing does no I/O; these
    // threads only compute.
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(wanted.len())
        .max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let geo = &base.geo;
    let built: Vec<(usize, GeoMap, Duration)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((key, from)) = wanted.get(i) else {
                            break;
                        };
                        // Measured for `check-config` only; no decision reads it.
                        let started = std::time::Instant::now();
                        let inputs = &key.inputs;
                        let map = from
                            .and_then(|from| {
                                GeoMap::update(geo, &from.key.inputs, &from.map, inputs)
                            })
                            .unwrap_or_else(|| GeoMap::build(geo, inputs));
                        done.push((i, map, started.elapsed()));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("map builds do not panic"))
            .collect()
    });
    let mut times: HashMap<MapKey, Duration> = HashMap::new();
    for (i, map, time) in built {
        known.insert(wanted[i].0.clone(), Arc::new(map));
        times.insert(wanted[i].0.clone(), time);
    }
    facts
        .iter()
        .map(|f| {
            f.as_ref()?.inputs.as_ref().map(|key| {
                let map = known.get(key).expect("every map was built").clone();
                // The first service to use a new map is charged its build time.
                let time = times.remove(key).unwrap_or_default();
                (map, time)
            })
        })
        .collect()
}

/// The inputs of one service's decision map under the live state.
fn map_inputs(
    base: &BaseTable,
    service: &ServiceConfig,
    toggles: Toggles,
    states: &[DcState],
    eligible: &[bool],
    full: &[bool],
    spill: &[u16],
) -> MapInputs {
    let metric = toggles.policy(service.policy) == Policy::Metric;
    let by_place = !service.geofences.is_empty()
        || toggles.overrides()
            && service
                .overrides
                .iter()
                .any(|rule| !rule.countries.is_empty() || !rule.continents.is_empty());
    let measured = metric
        && service.pools.iter().any(|pool| {
            states[pool.datacenter]
                .report
                .as_ref()
                .is_some_and(|r| !r.latency_ms.is_empty())
        });
    let context = |region: Option<&Region>| {
        context_for(base, service, toggles, states, eligible, full, region)
    };
    let (contexts, by_region) = if by_place || measured {
        let mut contexts: Vec<Context> = Vec::new();
        let mut ids: HashMap<Context, u16> = HashMap::new();
        let by_region = base
            .geo
            .regions()
            .iter()
            .map(|region| {
                let context = context(Some(region));
                *ids.entry(context.clone()).or_insert_with(|| {
                    contexts.push(context);
                    (contexts.len() - 1) as u16
                })
            })
            .collect();
        (contexts, Some(by_region))
    } else {
        (vec![context(None)], None)
    };
    let answers = service.answers.get() as usize;
    // A datacenter without addresses of one family passes the answer on to the next.
    let lacking = service
        .pools
        .iter()
        .filter(|pool| pool.a.is_empty() || pool.aaaa.is_empty())
        .count();
    let spilling = service
        .pools
        .iter()
        .filter(|pool| spill[pool.datacenter] > 0)
        .count();
    let mut ordered = policy::by_order(&service.pools, &service.order);
    if toggles.policy(service.policy) == Policy::LeastLoaded {
        ordered.sort_by(|a, b| {
            let rank = |dc: &DcId| balance::load_rank(&states[usize::from(dc.0)]);
            rank(a).total_cmp(&rank(b))
        });
    }
    let (unlocated, unlocated_open) = filter(&ordered, eligible, service.all_down);
    let unlocated = last_if_full(unlocated, unlocated_open, full);
    MapInputs {
        depth: answers + lacking + spilling,
        contexts,
        by_region,
        unlocated: (unlocated, unlocated_open),
        within_km: service.max_extra_km.map(f64::to_bits),
        answering: answering(service, full, spill),
    }
}

/// What the records of `service`'s rankings depend on besides the ranking (see `classes.rs`).
fn answering(service: &ServiceConfig, full: &[bool], spill: &[u16]) -> Answering {
    let answers = service.answers.get() as usize;
    let mut datacenters: Vec<Usage> = service
        .pools
        .iter()
        .map(|pool| Usage {
            dc: policy::dc_id(pool),
            addresses: [pool.a.len().min(answers), pool.aaaa.len().min(answers)],
            spills: spill[pool.datacenter] > 0,
            full: full[pool.datacenter],
        })
        .collect();
    datacenters.sort_unstable_by_key(|u| u.dc);
    Answering {
        answers,
        datacenters,
    }
}

/// The candidates of clients in `region` (any region when `None`: no place rule applies).
fn context_for(
    base: &BaseTable,
    service: &ServiceConfig,
    toggles: Toggles,
    states: &[DcState],
    eligible: &[bool],
    full: &[bool],
    region: Option<&Region>,
) -> Context {
    let allowed = matching(&service.geofences, region).map(|rule| base::rule_dcs(service, rule));
    let preferred = matching(&service.overrides, region)
        .filter(|_| toggles.overrides())
        .map(|rule| base::rule_dcs(service, rule))
        .unwrap_or_default();
    let policy = toggles.policy(service.policy);
    let in_order: Vec<(u32, DcId, usize)> = service
        .order
        .iter()
        .enumerate()
        .map(|(position, &pool)| (position as u32, policy::dc_id(&service.pools[pool]), pool))
        .filter(|(_, dc, _)| allowed.as_ref().is_none_or(|a| a.contains(dc)))
        .collect();
    let healthy: Vec<(u32, DcId, usize)> = in_order
        .iter()
        .copied()
        .filter(|(_, dc, _)| eligible[usize::from(dc.0)])
        .collect();
    let (members, failed_open) = match (healthy.is_empty(), service.all_down) {
        (false, _) => (healthy, false),
        (true, AllDown::FailOpen) => (in_order, true),
        (true, AllDown::ServFail) => (Vec::new(), false),
    };
    let candidates = members
        .into_iter()
        .map(|(position, dc, pool)| {
            let pref = preferred.iter().position(|p| *p == dc);
            let full = !failed_open && full[usize::from(dc.0)];
            let (per_km, offset) = match pref {
                Some(rank) => (0.0, rank as f64),
                None if policy == Policy::Metric => metric_parameters(service, states, region, dc),
                None if policy == Policy::LeastLoaded => {
                    (0.0, balance::load_rank(&states[usize::from(dc.0)]))
                }
                None => service.pools[pool].bias.score_parameters(),
            };
            Candidate {
                dc,
                tier: 2 * u8::from(full) + u8::from(pref.is_none()),
                per_km,
                offset,
                position,
                at: base.dc_coordinates[usize::from(dc.0)],
                point: UnitVector::of(&base.dc_coordinates[usize::from(dc.0)]),
            }
        })
        .collect();
    Context {
        candidates,
        failed_open,
    }
}

/// The first rule that applies to clients of `region`.
fn matching<'r>(rules: &'r [ClientRule], region: Option<&Region>) -> Option<&'r ClientRule> {
    let region = region?;
    rules
        .iter()
        .find(|rule| rule.matches_place(region.country, region.continent))
}

/// `metric`: the score of `dc` for clients of `region` as `per_km × distance + offset`:
/// `latency_weight × latency + cost_weight × cost`, the latency measured for the region or
/// estimated from distance.
fn metric_parameters(
    service: &ServiceConfig,
    states: &[DcState],
    region: Option<&Region>,
    dc: DcId,
) -> (f64, f64) {
    let report = states[usize::from(dc.0)].report.as_ref();
    let measured = region.and_then(|region| {
        measured_latency(report, region.country.as_ref(), region.continent.as_ref())
    });
    let cost = service.metric.cost * report.and_then(|r| r.cost).unwrap_or(0.0);
    match measured {
        Some(latency) => (0.0, service.metric.latency * latency + cost),
        None => {
            let (base_ms, per_km) = policy::latency_estimate();
            (
                service.metric.latency * per_km,
                service.metric.latency * base_ms + cost,
            )
        }
    }
}

/// The latency a report measured for a client's country, else its continent.
fn measured_latency(
    report: Option<&ReportState>,
    country: Option<&crate::geo::CountryCode>,
    continent: Option<&crate::geo::Continent>,
) -> Option<f64> {
    let report = report?;
    let by_country = country.and_then(|c| report.latency_ms.get(c.as_str()));
    let by_continent = continent.and_then(|c| report.latency_ms.get(c.code()));
    by_country.or(by_continent).copied()
}

/// Builds one service's live rankings.
fn build_service(
    base: &BaseTable,
    service: &ServiceConfig,
    id: ServiceId,
    facts: ServiceFacts,
    map: Option<(Arc<GeoMap>, Duration)>,
) -> LiveService {
    let base_service = base.service(id);
    let mut interner: Interner<RankingId> = Interner::default();
    let mut failed_open = Vec::new();
    let mut finish = |ranking: Vec<DcId>, open: bool, interner: &mut Interner<RankingId>| {
        let id = interner.intern(ranking);
        if failed_open.len() <= id.0 as usize {
            failed_open.push(open);
        }
        id
    };
    let mut choose = |ranking: Vec<DcId>, open: bool, interner: &mut Interner<RankingId>| {
        let fronts = classes::spill_fronts(
            &ranking,
            open,
            |dc| facts.full[usize::from(dc.0)],
            |dc| facts.spill[usize::from(dc.0)] > 0,
        );
        if fronts.len() < 2 {
            return Choice::Fixed(finish(ranking, open, interner));
        }
        let fronts = fronts
            .into_iter()
            .map(|dc| {
                (
                    dc,
                    finish(classes::moved_first(&ranking, dc), false, interner),
                )
            })
            .collect();
        Choice::Split(fronts)
    };
    let by_base: Vec<Choice> = base_service
        .rankings
        .iter()
        .map(|ranking| {
            let (effective, open) = filter(ranking, &facts.eligible, service.all_down);
            let effective = last_if_full(effective, open, &facts.full);
            choose(effective, open, &mut interner)
        })
        .collect();
    let geo = facts.inputs.zip(map).map(|(key, (map, build_time))| {
        let choices = map
            .rankings
            .iter()
            .map(|(ranking, open)| choose(ranking.to_vec(), *open, &mut interner))
            .collect();
        GeoPart {
            key,
            map,
            choices,
            build_time,
        }
    });
    LiveService {
        rankings: interner.rankings,
        failed_open,
        by_base,
        geo,
        overloaded: facts.overloaded,
        slow: facts.slow,
        spill: facts.spill,
        ramps: facts.ramps,
        eligible: facts.eligible,
    }
}

/// Moves full datacenters (over the high watermark or the latency limit) after the others,
/// keeping each group's order; a ranking that failed open stays as it is.
fn last_if_full(ranking: Vec<DcId>, failed_open: bool, full: &[bool]) -> Vec<DcId> {
    if failed_open {
        return ranking;
    }
    let (mut ranking, rest): (Vec<DcId>, Vec<DcId>) =
        ranking.into_iter().partition(|dc| !full[usize::from(dc.0)]);
    ranking.extend(rest);
    ranking
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

/// Lengthens `prefix_len` until the network `ip`/`prefix_len` overlaps no override network
/// that does not hold `ip`: inside such a network clients get another answer.
fn narrow_for_overrides(overrides: &[(IpNet, BaseId)], ip: IpAddr, prefix_len: u8) -> u8 {
    let ip = ip.to_canonical();
    let (bits, width) = match ip {
        IpAddr::V4(v4) => (u128::from(v4.to_bits()) << 96, 32u8),
        IpAddr::V6(v6) => (v6.to_bits(), 128u8),
    };
    let mut prefix_len = prefix_len;
    for (net, _) in overrides {
        if net.contains(&ip) {
            continue;
        }
        let net_bits = match (net.network(), ip) {
            (IpAddr::V4(n), IpAddr::V4(_)) => u128::from(n.to_bits()) << 96,
            (IpAddr::V6(n), IpAddr::V6(_)) => n.to_bits(),
            _ => continue,
        };
        // The leading bits the client shares with the override network; fewer than the
        // network's own prefix, since it does not hold the client.
        let common = ((bits ^ net_bits).leading_zeros() as u8).min(width);
        if common >= prefix_len {
            prefix_len = (common + 1).min(width);
        }
    }
    prefix_len
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
    let measured = measured_latency(report, cell.country.as_ref(), cell.continent.as_ref());
    let latency = measured.unwrap_or_else(|| {
        let distance = cell
            .coordinates
            .distance_km(&base.dc_coordinates[usize::from(dc.0)]);
        policy::estimated_latency_ms(distance)
    });
    let cost = report.and_then(|r| r.cost).unwrap_or(0.0);
    service.metric.latency * latency + service.metric.cost * cost
}
