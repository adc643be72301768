//! The routing core: which datacenters serve a client, in which order. Pure and synchronous.
//!
//! Two layers, both built off the query path:
//! - [`BaseTable`] compiles the configuration into the rankings that do not depend on the
//!   client's place (weight buckets, the configured order, per-network overrides). It is built
//!   on reload.
//! - [`RoutingTable`] applies the live state of every datacenter (reports, drains, staleness,
//!   utilization) to them, and holds each geographic service's decision map (`geomap.rs`): its
//!   ranking for every location, decided a whole quad of the world at a time, shared between
//!   services with the same inputs and rebuilt only when those inputs change.
//!
//! [`RoutingTable::resolve`] then only looks things up: no I/O, no clock (the caller passes the
//! state as of a time), no locks, no metrics, no allocation. It also finds the ECS scope: the
//! widest network around the client over which the answer cannot change. [`explain`] retraces
//! one decision with every datacenter's reason, for operators. Map builds run on every core
//! (scoped threads) and time themselves for `check-config`; no decision reads that time.

mod balance;
mod base;
mod changes;
mod classes;
mod explain;
mod geomap;
mod live;
mod policy;
mod status;
mod toggles;

pub use balance::{Ramp, next_step_in, ramp_at, slow_start};
pub use base::BaseTable;
pub use explain::{DcTrace, Explanation, explain};
pub use geomap::MapStats;
pub use live::{DcState, MapReport, ReportState, RoutingTable, Standing};
pub use status::DcStatus;
pub use toggles::{Toggle, Toggles};

use std::net::IpAddr;

use crate::geo::{CellId, GeoDb, GeoHit};

/// Policies that split clients by network (`weighted`, spilling `nearest-with-capacity`) hash
/// IPv4 clients by /24 (or the ECS source prefix, when shorter), the usual granularity of ECS.
pub const NETWORK_PREFIX_V4: u8 = 24;
/// As [`NETWORK_PREFIX_V4`], for IPv6 clients: /48.
pub const NETWORK_PREFIX_V6: u8 = 48;

/// Index of a datacenter in `Config::datacenters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DcId(pub u16);

/// Index of a service in `Config::services`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId(pub u16);

/// Index of one of a service's distinct rankings in a [`RoutingTable`]; answers are prepared
/// per ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RankingId(pub u32);

/// Which records of a ranking a query is answered with. The ECS scope is the widest network
/// over which the reply carries the same records, so it depends on the family asked for: a
/// datacenter without AAAA addresses passes AAAA answers on to the next one, but answers A
/// itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// A records.
    A = 0,
    /// AAAA records.
    Aaaa = 1,
    /// ANY: the A records, or the AAAA records where a ranking has no A (RFC 8482 §4.1: one
    /// RRset).
    Any = 2,
}

/// What routing knows about the client of one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The client's geo cell, if the database could place it.
    pub cell: Option<CellId>,
    /// The prefix length of the geo database network holding the client.
    pub geo_prefix: u8,
    /// The client's address (for per-network overrides and the ECS scope).
    pub ip: IpAddr,
    /// A stable hash of the client's network (see [`network_key`]), for policies that split
    /// clients by network rather than by place.
    pub network_key: u64,
    /// The prefix length of the network `network_key` was taken over.
    pub network_prefix: u8,
}

impl Client {
    /// A client at `ip`, located by `hit`, whose network is hashed over `network_prefix` bits.
    pub fn new(ip: IpAddr, hit: GeoHit, network_prefix: u8) -> Client {
        let ip = ip.to_canonical();
        Client {
            cell: hit.cell,
            geo_prefix: hit.prefix_len,
            ip,
            network_key: network_key(ip, network_prefix),
            network_prefix,
        }
    }

    /// The client at `ip` with an ECS source prefix of `source_prefix` (the address's full
    /// length without ECS), located in `geo`: the one way DNS answers, explanations and
    /// simulations place a client, so all three route it alike.
    pub fn locate(geo: &GeoDb, ip: IpAddr, source_prefix: u8) -> Client {
        let network_prefix = match ip {
            IpAddr::V4(_) => NETWORK_PREFIX_V4,
            IpAddr::V6(_) => NETWORK_PREFIX_V6,
        }
        .min(source_prefix);
        Client::new(ip, geo.lookup(ip), network_prefix)
    }

    /// What the geo database said about the client.
    pub fn hit(&self) -> GeoHit {
        GeoHit {
            cell: self.cell,
            prefix_len: self.geo_prefix,
        }
    }
}

/// Why the ranking is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// Ranked by distance from the client's location.
    Distance,
    /// The client could not be located: the service's configured order.
    NoLocation,
    /// The service's configured order, whatever the client (`failover`).
    Order,
    /// Chosen by weight over a stable hash of the client's network (`weighted`).
    Weight,
    /// Ranked by the latency/cost score (`metric`).
    Score,
    /// Ranked by reported utilization (`least-loaded`).
    Load,
    /// A per-network override.
    Override,
}

/// What bounds the network an answer holds for (the ECS scope).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The answer does not depend on the client.
    Global,
    /// The widest network of the decision map with the client's answer.
    Geo,
    /// The network the client's hash was taken over (`weighted`).
    Network,
    /// The longer of `Geo` and `Network`: both decided (capacity spill).
    GeoAndNetwork,
    /// A configured override network of this prefix length.
    Prefix(u8),
}

/// The outcome of routing one query: a ranked list of datacenters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'t> {
    /// Which of the service's distinct rankings this is.
    pub ranking: RankingId,
    /// The datacenters, best first; empty only when the service answers SERVFAIL because
    /// every datacenter is ineligible.
    pub datacenters: &'t [DcId],
    /// Why.
    pub basis: Basis,
    /// What bounds the network the answer holds for.
    pub scope: Scope,
    /// The ECS scope, in the client address's family: every address in the client's network of
    /// this length gets this decision under the same state (more specific override networks
    /// already carved out).
    pub prefix_len: u8,
    /// Every datacenter was ineligible and the service failed open.
    pub failed_open: bool,
}

/// How many hash buckets client networks fall into (`weighted`, `nearest-with-capacity`);
/// shares are exact to 1/1024.
pub const BUCKETS: usize = 1024;

/// The hash bucket of a network key.
pub fn bucket(network_key: u64) -> usize {
    (network_key % BUCKETS as u64) as usize
}

/// A stable 64-bit key of the network `ip`/`prefix_len` (bits past the prefix are ignored).
///
/// FNV-1a over the family, the prefix length and the masked address bytes, then a splitmix
/// finalizer: the same on every platform and release, so a network keeps its answer across
/// restarts and upgrades.
pub fn network_key(ip: IpAddr, prefix_len: u8) -> u64 {
    let (family, bytes, max) = match ip.to_canonical() {
        IpAddr::V4(v4) => (4u8, u128::from(v4.to_bits()) << 96, 32u8),
        IpAddr::V6(v6) => (6u8, v6.to_bits(), 128u8),
    };
    let prefix_len = prefix_len.min(max);
    let mask = if prefix_len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix_len))
    };
    let masked = (bytes & mask).to_be_bytes();
    let mut hash = policy::Fnv::new();
    hash.write(&[family, prefix_len]);
    hash.write(&masked);
    policy::splitmix(hash.finish())
}

#[cfg(test)]
mod balance_tests;
#[cfg(test)]
mod changes_tests;
#[cfg(test)]
mod geomap_tests;
#[cfg(test)]
mod scope_tests;
#[cfg(test)]
mod tests;
