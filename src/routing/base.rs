//! The base table: what depends only on the configuration and the geo database: the rankings
//! that do not depend on the client's place (configured order, weight buckets, per-network
//! overrides), and the geo database that decision maps are built over (`geomap.rs`, in the live
//! layer, because candidates depend on the live state).

use std::collections::HashMap;
use std::sync::Arc;

use ipnet::IpNet;

use crate::config::{ClientRule, Config, Policy, ServiceConfig};
use crate::geo::{Coordinates, GeoDb, Location};

use super::policy;
use super::{BUCKETS, DcId, ServiceId};

/// Index of a distinct base ranking of one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct BaseId(pub(super) u32);

/// Base rankings of every service, plus what the live layer and explanations need to know
/// about datacenters and cells.
#[derive(Debug)]
pub struct BaseTable {
    pub(super) services: Vec<BaseService>,
    /// Datacenter coordinates, by `DcId`.
    pub(super) dc_coordinates: Vec<Coordinates>,
    /// The geo database decision maps are built over.
    pub(super) geo: Arc<GeoDb>,
    /// The services whose pool holds each datacenter, by `DcId`: a change of one datacenter's
    /// state is judged for these only (`changes.rs`).
    pub(super) holders: Vec<Vec<ServiceId>>,
}

#[derive(Debug)]
pub(super) struct BaseService {
    pub(super) policy: Policy,
    /// Distinct base rankings; the fields below index into it.
    pub(super) rankings: Vec<Box<[DcId]>>,
    /// The configured order: `failover`, and clients without a location.
    pub(super) ordered: BaseId,
    /// `weighted`: each bucket's weighted rendezvous ranking.
    pub(super) by_bucket: Vec<BaseId>,
    /// Per-network overrides: the network and its ranking, most specific first.
    pub(super) by_network: Vec<(IpNet, BaseId)>,
}

impl BaseTable {
    /// Compiles the client-independent rankings of every service, over `geo`.
    pub fn build(config: &Config, geo: Arc<GeoDb>) -> BaseTable {
        let dc_coordinates: Vec<Coordinates> =
            config.datacenters.iter().map(|dc| dc.coordinates).collect();
        let names: Vec<&str> = config
            .datacenters
            .iter()
            .map(|dc| dc.name.as_str())
            .collect();
        let services = config
            .services
            .iter()
            .map(|service| build_service(service, &names))
            .collect();
        let mut holders = vec![Vec::new(); config.datacenters.len()];
        for (i, service) in config.services.iter().enumerate() {
            for pool in &service.pools {
                holders[pool.datacenter].push(ServiceId(i as u16));
            }
        }
        BaseTable {
            services,
            dc_coordinates,
            geo,
            holders,
        }
    }

    pub(super) fn service(&self, service: ServiceId) -> &BaseService {
        &self.services[usize::from(service.0)]
    }

    /// The geo database.
    pub fn geo(&self) -> &Arc<GeoDb> {
        &self.geo
    }
}

impl BaseService {
    /// The override for `ip`, if one of the service's override networks contains it.
    pub(super) fn network_override(&self, ip: std::net::IpAddr) -> Option<(IpNet, BaseId)> {
        let ip = ip.to_canonical();
        self.by_network
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .copied()
    }
}

fn build_service(service: &ServiceConfig, names: &[&str]) -> BaseService {
    let mut interner = Interner::default();
    let ordered_dcs = policy::by_order(&service.pools, &service.order);
    let ordered = interner.intern(ordered_dcs.clone());
    let by_bucket = match service.policy {
        Policy::Weighted => (0..BUCKETS)
            .map(|bucket| interner.intern(policy::by_weight(&service.pools, names, bucket)))
            .collect(),
        _ => Vec::new(),
    };
    let mut by_network: Vec<(IpNet, BaseId)> = service
        .overrides
        .iter()
        .flat_map(|rule| {
            let ranking = prefer(ordered_dcs.clone(), &rule_dcs(service, rule));
            let id = interner.intern(ranking);
            rule.cidrs.iter().map(move |net| (*net, id))
        })
        .collect();
    // Most specific network first, so a /24 override wins over the /16 around it.
    by_network.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
    BaseService {
        policy: service.policy,
        rankings: interner.rankings,
        ordered,
        by_bucket,
        by_network,
    }
}

/// The first geofence that applies to clients of `cell`.
pub(super) fn fence_for<'s>(service: &'s ServiceConfig, cell: &Location) -> Option<&'s ClientRule> {
    service
        .geofences
        .iter()
        .find(|rule| rule.matches_place(cell.country, cell.continent))
}

/// A rule's datacenters, as ids, in the rule's order.
pub(super) fn rule_dcs(service: &ServiceConfig, rule: &ClientRule) -> Vec<DcId> {
    rule.pools
        .iter()
        .map(|&pool| policy::dc_id(&service.pools[pool]))
        .collect()
}

/// Moves `preferred` (those present) to the front, in their order; the rest keep theirs.
fn prefer(ranking: Vec<DcId>, preferred: &[DcId]) -> Vec<DcId> {
    let mut out: Vec<DcId> = preferred
        .iter()
        .filter(|dc| ranking.contains(dc))
        .copied()
        .collect();
    out.extend(ranking.into_iter().filter(|dc| !preferred.contains(dc)));
    out
}

/// Stores each distinct ranking once.
pub(super) struct Interner<Id> {
    pub(super) rankings: Vec<Box<[DcId]>>,
    ids: HashMap<Box<[DcId]>, Id>,
}

impl<Id: Copy + From<u32>> Interner<Id> {
    pub(super) fn intern(&mut self, ranking: Vec<DcId>) -> Id {
        let ranking = ranking.into_boxed_slice();
        if let Some(&id) = self.ids.get(&ranking) {
            return id;
        }
        let id = Id::from(u32::try_from(self.rankings.len()).expect("rankings fit in u32"));
        self.rankings.push(ranking.clone());
        self.ids.insert(ranking, id);
        id
    }
}

impl From<u32> for BaseId {
    fn from(id: u32) -> Self {
        BaseId(id)
    }
}

impl<Id> Default for Interner<Id> {
    fn default() -> Self {
        Interner {
            rankings: Vec::new(),
            ids: HashMap::new(),
        }
    }
}
