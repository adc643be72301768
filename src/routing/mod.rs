//! The routing core: which datacenters serve a client, in which order. Pure and synchronous.
//!
//! [`RoutingTable::build`] compiles the configuration and the geo database's cells into
//! rankings when a snapshot is built; [`RoutingTable::resolve`] then only indexes tables. No I/O,
//! no clock, no locks, no metrics, no allocation on the query path. Answers (DNS records) are not
//! made here: see `dns::answer`.

mod policy;
mod table;

pub use table::RoutingTable;

use std::net::IpAddr;

use crate::geo::CellId;

/// Index of a datacenter in `Config::datacenters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DcId(pub u16);

/// Index of a service in `Config::services`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId(pub u16);

/// Index of one of a service's distinct rankings; answers are prepared per ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RankingId(pub u32);

/// What routing knows about the client of one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The client's geo cell, if the database could place it.
    pub cell: Option<CellId>,
    /// A stable hash of the client's network (see [`network_key`]), for policies that split
    /// clients by network rather than by place.
    pub network_key: u64,
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
}

/// The outcome of routing one query: a ranked list of datacenters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'t> {
    /// Which of the service's distinct rankings this is.
    pub ranking: RankingId,
    /// The datacenters, best first; never empty.
    pub datacenters: &'t [DcId],
    /// Why.
    pub basis: Basis,
}

/// A stable 64-bit key of the network `ip`/`prefix_len` (bits past the prefix are ignored).
///
/// FNV-1a over the family, the prefix length and the masked address bytes: the same on every
/// platform and release, so a network keeps its answer across restarts and upgrades.
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
    hash.finish()
}

#[cfg(test)]
mod tests;
