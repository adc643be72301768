//! The policies: each turns a service's pools and a client into a ranking of datacenters.
//!
//! These run when a snapshot is built (once per cell or per weight bucket), never per query.

use crate::config::PoolConfig;
use crate::geo::Coordinates;

use super::DcId;

/// How many hash buckets `weighted` splits client networks into; shares are exact to 1/1024.
pub(super) const WEIGHT_BUCKETS: usize = 1024;

/// The configured order (`failover`, and the fallback of every policy for unlocated clients).
pub(super) fn by_order(pools: &[PoolConfig], order: &[usize]) -> Vec<DcId> {
    order.iter().map(|&i| dc_id(&pools[i])).collect()
}

/// Nearest first by great-circle distance; equal distances keep the configured order.
pub(super) fn by_distance(
    pools: &[PoolConfig],
    order: &[usize],
    dc_coordinates: &[Coordinates],
    client: &Coordinates,
) -> Vec<DcId> {
    let mut ranked: Vec<(f64, usize, DcId)> = order
        .iter()
        .enumerate()
        .map(|(position, &i)| {
            let dc = pools[i].datacenter;
            (
                client.distance_km(&dc_coordinates[dc]),
                position,
                dc_id(&pools[i]),
            )
        })
        .collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    ranked.into_iter().map(|(_, _, dc)| dc).collect()
}

/// Weighted rendezvous hashing for one bucket: each datacenter draws a stable pseudo-random
/// number from (bucket, its name) and scores `-weight / ln(u)`; the highest score ranks first.
/// Over all buckets, a datacenter comes first in proportion to its weight, and adding or removing
/// one datacenter only moves the buckets it wins or loses.
pub(super) fn by_weight(pools: &[PoolConfig], names: &[&str], bucket: usize) -> Vec<DcId> {
    let mut ranked: Vec<(f64, DcId)> = pools
        .iter()
        .map(|pool| {
            let mut hash = Fnv::new();
            hash.write(&(bucket as u64).to_be_bytes());
            hash.write(names[pool.datacenter].as_bytes());
            // Map to (0, 1): 53 random bits, never exactly 0 or 1.
            let u = ((splitmix(hash.finish()) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let score = -f64::from(pool.weight.get()) / u.ln();
            (score, dc_id(pool))
        })
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked.into_iter().map(|(_, dc)| dc).collect()
}

fn dc_id(pool: &PoolConfig) -> DcId {
    DcId(u16::try_from(pool.datacenter).expect("datacenter count is bounded by the config"))
}

/// FNV-1a, 64-bit: small, stable across platforms and releases (unlike `DefaultHasher`).
pub(super) struct Fnv(u64);

impl Fnv {
    pub(super) fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub(super) fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub(super) fn finish(&self) -> u64 {
        self.0
    }
}

/// The splitmix64 finalizer: spreads FNV's weak low bits over the whole word.
pub(super) fn splitmix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
