//! Response rate limiting (RRL), as Knot, NSD and BIND have it: a pure limiter any UDP path can
//! call with (client address, response class, now) and that answers send, slip or drop.
//!
//! Each client network (the address cut to `ipv4_prefix` / `ipv6_prefix` bits) and response
//! class has a token bucket holding at most one second's worth of responses
//! (`responses_per_second`), refilled every second. A response that finds its bucket empty is
//! limited: every `slip`th limited response goes out as an empty reply with TC set, so a real
//! resolver behind a spoofed flood retries over TCP and still gets its answer; the others are
//! dropped, so a reflected flood is cut to a trickle.
//!
//! The buckets live in one fixed table allocated up front ([`TABLE_SLOTS`] slots of one
//! `AtomicU64` each, 512 KiB), so however many sources a flood forges, memory does not grow.
//! A slot holds a fingerprint of its key; a different key hashing to the same slot takes it over
//! with a full bucket, which errs towards answering (the hash is keyed per process, so a
//! flood cannot aim at a victim's slot). Updates are one compare-and-swap: no lock, and a lost
//! race costs at most one response's accounting.
//!
//! It does not read a clock (the caller passes `now`), count metrics, or know about TCP (TCP
//! replies are never limited: a TCP client has proved its address).

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::config::RrlConfig;

use super::edns::masked;

/// Slots in the bucket table: 65,536 client networks and classes active in the same few
/// seconds before they share slots (Knot's default table is of the same order).
pub const TABLE_SLOTS: usize = 1 << 16;
/// The largest `responses_per_second` a bucket can hold (16 bits of tokens); configuration
/// validation keeps `server.rrl` within it.
const MAX_RATE: u32 = u16::MAX as u32;

/// What kind of response is being limited; each class of a client network has its own bucket,
/// so a flood of NXDOMAIN does not starve the same network's positive answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseClass {
    /// NOERROR with records in the answer section.
    Positive,
    /// NOERROR without answers: the name exists, the type does not (NODATA).
    NoData,
    /// NXDOMAIN.
    NxDomain,
    /// A referral to a delegated zone.
    Referral,
    /// Any other rcode (REFUSED, FORMERR, SERVFAIL, NOTIMP, ...).
    Error,
}

/// What to do with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it as it is.
    Send,
    /// Limited: send an empty reply with TC set instead.
    Slip,
    /// Limited: send nothing.
    Drop,
}

/// The limiter: settings and the fixed bucket table.
#[derive(Debug)]
pub struct RateLimiter {
    settings: RrlConfig,
    /// Tokens a bucket holds when full, and gains each second.
    rate: u64,
    /// Per-slot state, packed (see [`Slot`]); atomics so that every query task updates them
    /// without a lock.
    table: Box<[AtomicU64]>,
    /// Keyed per process so a flood cannot pick which slot it lands in.
    hasher: RandomState,
    /// `now` is measured from here, in whole seconds.
    epoch: Instant,
}

impl RateLimiter {
    /// A limiter with all buckets full; `epoch` is the instant `now` arguments count from.
    pub fn new(settings: RrlConfig, epoch: Instant) -> RateLimiter {
        let rate = u64::from(settings.responses_per_second.clamp(1, MAX_RATE));
        RateLimiter {
            settings,
            rate,
            table: (0..TABLE_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
            epoch,
        }
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &RrlConfig {
        &self.settings
    }

    /// Takes one token for a `class` response to `client` at `now` and says what to do.
    pub fn check(&self, client: IpAddr, class: ResponseClass, now: Instant) -> Verdict {
        let client = client.to_canonical();
        if self.settings.exempt.iter().any(|net| net.contains(&client)) {
            return Verdict::Send;
        }
        let prefix = match client {
            IpAddr::V4(_) => self.settings.ipv4_prefix,
            IpAddr::V6(_) => self.settings.ipv6_prefix,
        };
        let hash = self.hasher.hash_one((masked(client, prefix), class as u8));
        // The low bits pick the slot, the high bits tell keys sharing a slot apart.
        let slot = &self.table[(hash as usize) % TABLE_SLOTS];
        let fingerprint = (hash >> 40) | 1;
        // Whole seconds wrap at 2^16 (18 hours); a bucket idle that long refills anyway.
        let second = (now.saturating_duration_since(self.epoch).as_secs() & 0xffff) as u16;
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let (next, verdict) = self.step(Slot::unpack(current), fingerprint, second);
            match slot.compare_exchange_weak(
                current,
                next.pack(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return verdict,
                Err(actual) => current = actual,
            }
        }
    }

    /// One bucket's next state and the verdict, for a response at `second`.
    fn step(&self, slot: Slot, fingerprint: u64, second: u16) -> (Slot, Verdict) {
        let mut slot = if slot.fingerprint == fingerprint {
            slot
        } else {
            // An empty slot, or another key's: start full.
            Slot {
                fingerprint,
                second,
                tokens: self.rate as u16,
                slipped: 0,
            }
        };
        let elapsed = u64::from(second.wrapping_sub(slot.second));
        if elapsed > 0 {
            let tokens = (u64::from(slot.tokens) + elapsed * self.rate).min(self.rate);
            slot.tokens = tokens as u16;
            slot.second = second;
        }
        if slot.tokens > 0 {
            slot.tokens -= 1;
            return (slot, Verdict::Send);
        }
        let verdict = match self.settings.slip {
            0 => Verdict::Drop,
            slip => {
                slot.slipped += 1;
                if u32::from(slot.slipped) >= slip {
                    slot.slipped = 0;
                    Verdict::Slip
                } else {
                    Verdict::Drop
                }
            }
        };
        (slot, verdict)
    }
}

/// One bucket, packed into 64 bits: fingerprint (24), second (16), tokens (16), slip count (8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    /// Never 0 for a used slot, so a zeroed table is all empty slots.
    fingerprint: u64,
    second: u16,
    tokens: u16,
    slipped: u8,
}

impl Slot {
    fn unpack(bits: u64) -> Slot {
        Slot {
            fingerprint: bits >> 40,
            second: (bits >> 24) as u16,
            tokens: (bits >> 8) as u16,
            slipped: bits as u8,
        }
    }

    fn pack(self) -> u64 {
        (self.fingerprint << 40)
            | (u64::from(self.second) << 24)
            | (u64::from(self.tokens) << 8)
            | u64::from(self.slipped)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limiter(rate: u32, slip: u32, exempt: &[&str]) -> (RateLimiter, Instant) {
        let epoch = Instant::now();
        let config = RrlConfig {
            responses_per_second: rate,
            slip,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            exempt: exempt.iter().map(|n| n.parse().unwrap()).collect(),
        };
        (RateLimiter::new(config, epoch), epoch)
    }

    fn verdicts(
        limiter: &RateLimiter,
        client: &str,
        class: ResponseClass,
        now: Instant,
        n: usize,
    ) -> Vec<Verdict> {
        let client: IpAddr = client.parse().unwrap();
        (0..n).map(|_| limiter.check(client, class, now)).collect()
    }

    #[test]
    fn a_network_gets_its_rate_then_every_slipth_is_tc() {
        let (limiter, epoch) = limiter(5, 2, &[]);
        let got = verdicts(&limiter, "192.0.2.1", ResponseClass::Positive, epoch, 9);
        use Verdict::*;
        assert_eq!(got, [Send, Send, Send, Send, Send, Drop, Slip, Drop, Slip]);
        // The same /24 shares the bucket; another /24 and another class do not.
        assert_eq!(
            verdicts(&limiter, "192.0.2.200", ResponseClass::Positive, epoch, 1),
            [Drop]
        );
        assert_eq!(
            verdicts(&limiter, "192.0.3.1", ResponseClass::Positive, epoch, 5),
            [Send; 5]
        );
        assert_eq!(
            verdicts(&limiter, "192.0.2.1", ResponseClass::NxDomain, epoch, 5),
            [Send; 5]
        );
    }

    #[test]
    fn buckets_refill_each_second_up_to_the_rate() {
        let (limiter, epoch) = limiter(3, 0, &[]);
        use Verdict::*;
        let class = ResponseClass::Error;
        assert_eq!(
            verdicts(&limiter, "2001:db8::1", class, epoch, 4),
            [Send, Send, Send, Drop]
        );
        // Same /56.
        assert_eq!(
            verdicts(&limiter, "2001:db8:0:ff::9", class, epoch, 1),
            [Drop]
        );
        let later = epoch + Duration::from_millis(1500);
        assert_eq!(
            verdicts(&limiter, "2001:db8::1", class, later, 4),
            [Send, Send, Send, Drop]
        );
        // Ten idle seconds refill to the rate, not beyond: no banked burst.
        let much_later = epoch + Duration::from_secs(11);
        assert_eq!(
            verdicts(&limiter, "2001:db8::1", class, much_later, 4),
            [Send, Send, Send, Drop]
        );
    }

    #[test]
    fn slip_one_makes_every_limited_response_tc_and_exempt_networks_pass() {
        let (limiter, epoch) = limiter(1, 1, &["198.51.100.0/24"]);
        use Verdict::*;
        assert_eq!(
            verdicts(&limiter, "203.0.113.9", ResponseClass::Referral, epoch, 3),
            [Send, Slip, Slip]
        );
        assert_eq!(
            verdicts(&limiter, "198.51.100.7", ResponseClass::Referral, epoch, 50),
            [Send; 50]
        );
        // IPv4-mapped IPv6 is the IPv4 client.
        assert_eq!(
            verdicts(
                &limiter,
                "::ffff:198.51.100.7",
                ResponseClass::Referral,
                epoch,
                3
            ),
            [Send; 3]
        );
    }

    #[test]
    fn slots_pack_and_unpack() {
        let slot = Slot {
            fingerprint: 0xab_cdef,
            second: 0x1234,
            tokens: 0xfedc,
            slipped: 0x56,
        };
        assert_eq!(Slot::unpack(slot.pack()), slot);
    }
}
