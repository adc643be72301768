//! The policies: each turns a service's pools and a client into a ranking of datacenters.
//!
//! These run when a snapshot is built (per weight bucket, or while deciding a decision map),
//! never per query.

use crate::config::{PoolConfig, Watermarks};

use super::{BUCKETS, DcId};

/// The configured order (`failover`, and the fallback of every policy for unlocated clients).
pub(super) fn by_order(pools: &[PoolConfig], order: &[usize]) -> Vec<DcId> {
    order.iter().map(|&i| dc_id(&pools[i])).collect()
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

pub(super) fn dc_id(pool: &PoolConfig) -> DcId {
    DcId(u16::try_from(pool.datacenter).expect("datacenter count is bounded by the config"))
}

/// Whether a datacenter at `utilization` is full: over the high watermark, or, if it was full
/// already, not yet below `high - hysteresis` (so it does not flap at the watermark).
pub(super) fn still_overloaded(was: bool, utilization: f64, watermarks: &Watermarks) -> bool {
    if was {
        utilization > watermarks.high - watermarks.hysteresis
    } else {
        utilization > watermarks.high
    }
}

/// How many of the `BUCKETS` client-network buckets a datacenter at `utilization` sends to the
/// next datacenter: none at or below the low watermark, a share growing linearly to all of them
/// at the high watermark.
pub(super) fn spill_buckets(utilization: f64, watermarks: &Watermarks) -> usize {
    let share = (utilization - watermarks.low) / (watermarks.high - watermarks.low);
    if share.is_nan() || share <= 0.0 {
        0
    } else {
        ((share.min(1.0) * BUCKETS as f64).round() as usize).min(BUCKETS)
    }
}

/// Latency estimate where no measurement exists: light in fibre covers about 100 km per
/// millisecond of round trip, plus a fixed cost for the last mile and the server.
pub(super) fn estimated_latency_ms(distance_km: f64) -> f64 {
    ESTIMATE_BASE_MS + distance_km / KM_PER_MS
}

/// The estimate's (fixed milliseconds, milliseconds per kilometre).
pub(super) fn latency_estimate() -> (f64, f64) {
    (ESTIMATE_BASE_MS, 1.0 / KM_PER_MS)
}

/// Fixed part of a latency estimate, milliseconds.
const ESTIMATE_BASE_MS: f64 = 5.0;
/// Kilometres of great-circle distance per millisecond of round trip.
const KM_PER_MS: f64 = 100.0;

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
