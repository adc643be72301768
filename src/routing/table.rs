//! The compiled routing table: every ranking a query can need, computed when a snapshot is built.

use std::collections::HashMap;

use crate::config::{Config, Policy, ServiceConfig};
use crate::geo::{Coordinates, Location};

use super::policy::{self, WEIGHT_BUCKETS};
use super::{Basis, Client, DcId, Decision, RankingId, ServiceId};

/// Every service's rankings, ready to index.
#[derive(Debug, Clone)]
pub struct RoutingTable {
    services: Vec<ServiceRoutes>,
}

#[derive(Debug, Clone)]
struct ServiceRoutes {
    policy: Policy,
    /// Distinct rankings; the other fields index into this.
    rankings: Vec<Box<[DcId]>>,
    /// The ranking for clients without a location (the configured order).
    unlocated: RankingId,
    /// `nearest`: the ranking of each geo cell, indexed by `CellId`.
    by_cell: Vec<RankingId>,
    /// `weighted`: the ranking of each hash bucket.
    by_bucket: Vec<RankingId>,
}

impl RoutingTable {
    /// Compiles the rankings of every service for every cell of the geo database.
    ///
    /// `cells` are the geo database's locations, indexed by `CellId`. Costs one distance sort per
    /// (service, cell) for `nearest`; identical rankings are stored once.
    pub fn build(config: &Config, cells: &[Location]) -> RoutingTable {
        let coordinates: Vec<Coordinates> =
            config.datacenters.iter().map(|dc| dc.coordinates).collect();
        let names: Vec<&str> = config
            .datacenters
            .iter()
            .map(|dc| dc.name.as_str())
            .collect();
        let services = config
            .services
            .iter()
            .map(|service| build_service(service, &coordinates, &names, cells))
            .collect();
        RoutingTable { services }
    }

    /// Ranks the datacenters of `service` for `client`.
    ///
    /// # Panics
    ///
    /// If `service` or the client's cell does not belong to the table's snapshot: both come from
    /// the same snapshot, so that would be a bug in the caller.
    pub fn resolve(&self, service: ServiceId, client: &Client) -> Decision<'_> {
        let routes = &self.services[usize::from(service.0)];
        let (ranking, basis) = match routes.policy {
            Policy::Failover => (routes.unlocated, Basis::Order),
            Policy::Weighted => {
                let bucket = (client.network_key % WEIGHT_BUCKETS as u64) as usize;
                (routes.by_bucket[bucket], Basis::Weight)
            }
            Policy::Nearest => match client.cell {
                Some(cell) => (routes.by_cell[cell.0 as usize], Basis::Distance),
                None => (routes.unlocated, Basis::NoLocation),
            },
        };
        Decision {
            ranking,
            datacenters: &routes.rankings[ranking.0 as usize],
            basis,
        }
    }

    /// The distinct rankings of `service`, indexed by [`RankingId`], for preparing answers.
    pub fn rankings(&self, service: ServiceId) -> &[Box<[DcId]>] {
        &self.services[usize::from(service.0)].rankings
    }

    /// How many services the table routes.
    pub fn n_services(&self) -> usize {
        self.services.len()
    }
}

fn build_service(
    service: &ServiceConfig,
    coordinates: &[Coordinates],
    names: &[&str],
    cells: &[Location],
) -> ServiceRoutes {
    let mut interner = Interner::default();
    let unlocated = interner.intern(policy::by_order(&service.pools, &service.order));
    let by_cell = match service.policy {
        Policy::Nearest => cells
            .iter()
            .map(|cell| {
                interner.intern(policy::by_distance(
                    &service.pools,
                    &service.order,
                    coordinates,
                    &cell.coordinates,
                ))
            })
            .collect(),
        Policy::Failover | Policy::Weighted => Vec::new(),
    };
    let by_bucket = match service.policy {
        Policy::Weighted => (0..WEIGHT_BUCKETS)
            .map(|bucket| interner.intern(policy::by_weight(&service.pools, names, bucket)))
            .collect(),
        Policy::Nearest | Policy::Failover => Vec::new(),
    };
    ServiceRoutes {
        policy: service.policy,
        rankings: interner.rankings,
        unlocated,
        by_cell,
        by_bucket,
    }
}

/// Stores each distinct ranking once.
#[derive(Default)]
struct Interner {
    rankings: Vec<Box<[DcId]>>,
    ids: HashMap<Box<[DcId]>, RankingId>,
}

impl Interner {
    fn intern(&mut self, ranking: Vec<DcId>) -> RankingId {
        let ranking = ranking.into_boxed_slice();
        if let Some(&id) = self.ids.get(&ranking) {
            return id;
        }
        let id = RankingId(u32::try_from(self.rankings.len()).expect("rankings fit in u32"));
        self.rankings.push(ranking.clone());
        self.ids.insert(ranking, id);
        id
    }
}
