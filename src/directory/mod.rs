//! The user directory: which datacenter holds a user's data, and which to use now. Pure.
//!
//! Frontends ask meridian where a user lives. A user is placed by hash unless pinned:
//!
//! 1. [`user_hash`] maps the user id to 64 bits, `splitmix64(fnv1a64(id))` over the id's UTF-8
//!    bytes. FNV-1a 64 starts from the offset basis `0xcbf29ce484222325` and, for each byte,
//!    XORs the byte in and multiplies by the prime `0x100000001b3` (wrapping). The splitmix64
//!    finalizer then does `x ^= x >> 30; x *= 0xbf58476d1ce4e5b9; x ^= x >> 27;
//!    x *= 0x94d049bb133111eb; x ^= x >> 31` (wrapping). The result is the same on every
//!    platform and release; changing it would move users, so tests pin its values.
//! 2. The hash selects one of N buckets, `hash mod N` ([`bucket_of`]; N is a power of two,
//!    [`DEFAULT_BUCKETS`] by default). Doubling N splits bucket `b` into `b` and `b + N`, so
//!    growing the map only ever divides buckets.
//! 3. Each bucket maps to a [`Placement`]: a home and a replica datacenter.
//! 4. A pin maps one user to a placement of their own, overriding the bucket.
//!
//! [`serve_from`] then picks the datacenter to use now: the home when it is eligible, else the
//! replica, else the home anyway (fail open), and says which and why.
//!
//! A [`Directory`] is an immutable snapshot: lookups take no lock, do no I/O and do not
//! allocate. Changes build a new directory that shares what did not change. Pins live in a
//! compact index built for millions of entries (see `index.rs`), plus a small overlay of the
//! changes made since that index was built. A change copies only the overlay; the change that
//! takes the overlay past its limit (about twice the square root of the number of pins) merges
//! it into a new index. So one pin change does not copy every pin, and lookups check at most
//! one small hash map before the index.
//!
//! This module does not decide eligibility (the caller passes it in), parse configuration,
//! store pins or speak DNS; [`id_to_label`] and [`label_to_id`] only define the label form.

mod changes;
mod hash;
mod id;
mod index;

pub use changes::{PinChanges, WantedPin};
pub use hash::{bucket_of, user_hash};
pub use id::{UserIdError, check_user_id, id_to_label, label_to_id};

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use index::PinIndex;

/// The number of buckets when the configuration does not say.
pub const DEFAULT_BUCKETS: u32 = 4096;

/// The longest user id, in bytes of UTF-8.
pub const MAX_USER_ID_BYTES: usize = 256;

/// A home and a replica datacenter, as indexes into the directory's datacenter names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Placement {
    /// Where the user's data lives.
    pub home: u16,
    /// Where a copy lives, to serve from when the home cannot.
    pub replica: u16,
}

/// Where a lookup's placement came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The user's bucket.
    Bucket,
    /// A pin for this user.
    Pin,
}

/// One user's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The user's bucket (also when a pin overrides it).
    pub bucket: u32,
    /// The user's home and replica.
    pub placement: Placement,
    /// Whether the placement is the bucket's or a pin's.
    pub source: Source,
}

/// Why [`serve_from`] chose what it chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The home is eligible.
    Home,
    /// The home is ineligible and the replica is eligible.
    Replica,
    /// Both are ineligible: serve from the home anyway (fail open), since an answer that may
    /// fail beats no answer, and the home is where the data is authoritative.
    Fallback,
}

/// The datacenter to serve a user from now, and why: the home when `eligible`, else the
/// replica when `eligible`, else the home (fail open).
pub fn serve_from(placement: Placement, eligible: impl Fn(u16) -> bool) -> (u16, Reason) {
    if eligible(placement.home) {
        (placement.home, Reason::Home)
    } else if eligible(placement.replica) {
        (placement.replica, Reason::Replica)
    } else {
        (placement.home, Reason::Fallback)
    }
}

/// The whole directory: datacenter names, the bucket map and the pins. Immutable.
///
/// Cloning is cheap: every part sits behind an `Arc`, shared rather than locked because a
/// directory never changes once built (the `with_*` methods return a new one that shares the
/// parts they did not touch).
#[derive(Clone)]
pub struct Directory {
    /// Datacenter names; placements index into them.
    dc_names: Arc<[String]>,
    /// One placement per bucket; the length is a power of two.
    buckets: Arc<[Placement]>,
    /// The pins as of the last compaction.
    base: Arc<PinIndex>,
    /// Pin changes since `base` was built, checked first: `Some` pins, `None` unpins. Holds
    /// only entries that differ from `base`, and never more than `overlay_limit(base.len())`.
    overlay: Arc<HashMap<Box<str>, Option<Placement>>>,
    /// The number of pins, counting the overlay.
    n_pins: usize,
}

impl Directory {
    /// Builds a directory from datacenter names, a bucket map and pins in any order; of pins
    /// with the same id, the last wins.
    ///
    /// Ids are stored as given; callers check them with [`check_user_id`] where they come in.
    /// Building 10 million pins takes 1 to 2 s and 215 MB (see `benches/directory.rs`).
    ///
    /// # Panics
    ///
    /// If the number of buckets is not a power of two, if a placement names a datacenter
    /// index past `dc_names`, or if there are more than 65,536 datacenters (callers validate),
    /// and if the pin ids total 4 GiB or more.
    pub fn new(
        dc_names: Vec<String>,
        buckets: Vec<Placement>,
        pins: impl IntoIterator<Item = (String, Placement)>,
    ) -> Directory {
        assert!(
            dc_names.len() <= usize::from(u16::MAX) + 1,
            "{} datacenters, more than u16 indexes can name",
            dc_names.len()
        );
        assert!(
            buckets.len().is_power_of_two() && u32::try_from(buckets.len()).is_ok(),
            "bucket count {} is not a power of two up to 2^31",
            buckets.len()
        );
        let n_dcs = dc_names.len();
        for placement in &buckets {
            check_placement(placement, n_dcs);
        }
        let base = PinIndex::build(
            pins.into_iter()
                .inspect(|(_, placement)| check_placement(placement, n_dcs)),
        );
        Directory {
            dc_names: dc_names.into(),
            buckets: buckets.into(),
            n_pins: base.len(),
            base: Arc::new(base),
            overlay: Arc::default(),
        }
    }

    /// The default bucket map: bucket `b` has home `b mod n` and replica `(b + 1) mod n`, for
    /// `n` datacenters (with one datacenter, the replica is the home).
    ///
    /// # Panics
    ///
    /// If `n_datacenters` is 0.
    pub fn round_robin(n_datacenters: u16, n_buckets: u32) -> Vec<Placement> {
        assert!(
            n_datacenters > 0,
            "a bucket map needs at least one datacenter"
        );
        let n = u32::from(n_datacenters);
        let dc = |b: u32| u16::try_from(b % n).expect("a remainder mod a u16 fits in a u16");
        (0..n_buckets)
            .map(|b| Placement {
                home: dc(b),
                replica: dc((b + 1) % n),
            })
            .collect()
    }

    /// The number of buckets.
    pub fn n_buckets(&self) -> u32 {
        u32::try_from(self.buckets.len()).expect("checked when built")
    }

    /// The datacenter names, in index order.
    pub fn dc_names(&self) -> &[String] {
        &self.dc_names
    }

    /// The index of the datacenter called `name`.
    pub fn dc_index(&self, name: &str) -> Option<u16> {
        let position = self.dc_names.iter().position(|dc| dc == name)?;
        Some(u16::try_from(position).expect("checked when built"))
    }

    /// The placement of `bucket`.
    ///
    /// # Panics
    ///
    /// If `bucket` is not below [`Directory::n_buckets`].
    pub fn bucket(&self, bucket: u32) -> Placement {
        self.buckets[bucket as usize]
    }

    /// The user's entry: their pin if they have one, else their bucket's placement.
    ///
    /// No lock, no I/O, no allocation: one hash of the id, then at most one overlay probe and
    /// one index probe.
    pub fn lookup(&self, id: &str) -> Entry {
        let hash = user_hash(id);
        // The number of buckets is a power of two (checked when built), so masking is
        // `hash mod n` without a division.
        let bucket = u32::try_from(hash & (self.buckets.len() as u64 - 1))
            .expect("bucket counts fit in a u32");
        debug_assert_eq!(bucket, bucket_of(id, self.n_buckets()));
        match self.pin_with_hash(hash, id) {
            Some(placement) => Entry {
                bucket,
                placement,
                source: Source::Pin,
            },
            None => Entry {
                bucket,
                placement: self.buckets[bucket as usize],
                source: Source::Bucket,
            },
        }
    }

    /// The user's pin, if any.
    pub fn pin(&self, id: &str) -> Option<Placement> {
        self.pin_with_hash(user_hash(id), id)
    }

    /// The number of pinned users.
    pub fn n_pins(&self) -> usize {
        self.n_pins
    }

    /// A directory with these pin changes: `Some` pins (or re-pins) the user, `None` removes
    /// their pin. Later changes to the same id win.
    ///
    /// The changes go to the overlay, which this copies (it is small); the pin index is shared.
    /// When the overlay outgrows its limit, the changes are merged into a new index instead,
    /// which takes time linear in the number of pins (about 0.2 s for 10 million).
    ///
    /// # Panics
    ///
    /// If a placement names a datacenter index past [`Directory::dc_names`].
    pub fn with_pins(
        &self,
        changes: impl IntoIterator<Item = (String, Option<Placement>)>,
    ) -> Directory {
        let mut overlay = (*self.overlay).clone();
        let mut n_pins = self.n_pins;
        for (id, change) in changes {
            if let Some(placement) = &change {
                check_placement(placement, self.dc_names.len());
            }
            let hash = user_hash(&id);
            let in_base = self.base.get(hash, id.as_bytes());
            let before = overlay.get(id.as_str()).copied().unwrap_or(in_base);
            n_pins = n_pins + usize::from(change.is_some()) - usize::from(before.is_some());
            // Keep only what differs from the base, so undoing a change shrinks the overlay.
            if change == in_base {
                overlay.remove(id.as_str());
            } else {
                overlay.insert(id.into_boxed_str(), change);
            }
        }
        let mut res = Directory {
            overlay: Arc::new(overlay),
            n_pins,
            ..self.clone()
        };
        if res.overlay.len() > overlay_limit(res.base.len()) {
            res.base = Arc::new(res.base.merge(&res.overlay));
            res.overlay = Arc::default();
            debug_assert_eq!(res.base.len(), res.n_pins);
        }
        res
    }

    /// A directory with these bucket placements changed; the pins are shared.
    ///
    /// # Panics
    ///
    /// If a bucket is not below [`Directory::n_buckets`], or a placement names a datacenter
    /// index past [`Directory::dc_names`].
    pub fn with_buckets(&self, changes: impl IntoIterator<Item = (u32, Placement)>) -> Directory {
        let mut buckets = self.buckets.to_vec();
        for (bucket, placement) in changes {
            check_placement(&placement, self.dc_names.len());
            let n_buckets = buckets.len();
            *buckets
                .get_mut(bucket as usize)
                .unwrap_or_else(|| panic!("bucket {bucket} is past the {n_buckets} buckets")) =
                placement;
        }
        Directory {
            buckets: buckets.into(),
            ..self.clone()
        }
    }

    /// Every pin, sorted by id (byte order, as `str` compares), for export.
    ///
    /// The index is kept in hash order for lookups, so this sorts, which takes 16 bytes a pin
    /// while the iterator lives and about 4 s for 10 million pins (see
    /// `benches/directory.rs`). It is meant for exports; to count pins or look one up, use
    /// [`Directory::n_pins`] and [`Directory::pin`], which cost nothing.
    pub fn pins(&self) -> impl Iterator<Item = (&str, Placement)> + '_ {
        // The index entries the overlay overrides or removes: found by probing the index for
        // each overlay id, which is small, rather than the overlay for every indexed id.
        let mut hidden: Vec<u32> = self
            .overlay
            .keys()
            .filter_map(|id| self.base.position(user_hash(id), id.as_bytes()))
            .map(|i| u32::try_from(i).expect("the index has u32 offsets"))
            .collect();
        hidden.sort_unstable();
        let base = self.base.sorted_by_id(&hidden);
        let mut overlay: Vec<(&str, Placement)> = self
            .overlay
            .iter()
            .filter_map(|(id, change)| change.map(|placement| (&**id, placement)))
            .collect();
        overlay.sort_unstable_by(|a, b| a.0.cmp(b.0));
        MergedPins {
            base: base
                .into_iter()
                .map(|key| {
                    let i = key.index as usize;
                    (self.base.id(i), self.base.placement(i))
                })
                .peekable(),
            overlay: overlay.into_iter().peekable(),
        }
    }

    /// Approximate heap bytes used, counting shared parts in full.
    pub fn heap_bytes(&self) -> usize {
        let names: usize = self
            .dc_names
            .iter()
            .map(|name| size_of::<String>() + name.capacity())
            .sum();
        // A hash map slot holds the entry plus one control byte; keys are separate boxes.
        let overlay = self.overlay.capacity() * (size_of::<(Box<str>, Option<Placement>)>() + 1)
            + self.overlay.keys().map(|id| id.len()).sum::<usize>();
        names + self.buckets.len() * size_of::<Placement>() + self.base.heap_bytes() + overlay
    }

    /// The pin of the id `id` whose hash is `hash`: the overlay's word if it has one, else the
    /// index's.
    fn pin_with_hash(&self, hash: u64, id: &str) -> Option<Placement> {
        // An empty overlay (the usual case right after a compaction or a load) costs no
        // SipHash.
        if !self.overlay.is_empty()
            && let Some(&change) = self.overlay.get(id)
        {
            return change;
        }
        self.base.get(hash, id.as_bytes())
    }
}

impl fmt::Debug for Directory {
    /// A summary: a directory may hold millions of pins.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Directory")
            .field("dc_names", &self.dc_names)
            .field("n_buckets", &self.buckets.len())
            .field("n_pins", &self.n_pins)
            .field("n_overlay", &self.overlay.len())
            .finish_non_exhaustive()
    }
}

/// The most overlay entries a directory keeps before merging them into a new pin index:
/// twice the square root of the number of indexed pins, within [`MIN_OVERLAY`, `MAX_OVERLAY`].
///
/// Each change copies the overlay, and each compaction copies the index, at similar costs per
/// entry (about 20 ns on the benchmark machine). For changes made one at a time to `n` pins,
/// the copying per change is about `limit / 2 + n / limit` entries, least at
/// `limit = sqrt(2n)`; twice the square root costs 6% more and compacts (which briefly holds
/// two indexes) 30% less often. For 10 million pins that is 6,324 entries: about 0.1 ms a
/// change, compactions included, where a 65,536-entry overlay would cost about 1 ms.
fn overlay_limit(n_base: usize) -> usize {
    (2 * n_base.isqrt()).clamp(MIN_OVERLAY, MAX_OVERLAY)
}

/// The overlay limit of small directories, so that they do not compact on every change.
const MIN_OVERLAY: usize = 1024;
/// The overlay limit of very large directories, so that no change copies a huge overlay.
const MAX_OVERLAY: usize = 65_536;

fn check_placement(placement: &Placement, n_dcs: usize) {
    assert!(
        usize::from(placement.home.max(placement.replica)) < n_dcs,
        "placement {placement:?} names a datacenter past the {n_dcs} there are"
    );
}

/// Two id-sorted runs of pins with no id in common, merged.
struct MergedPins<B: Iterator, O: Iterator> {
    base: std::iter::Peekable<B>,
    overlay: std::iter::Peekable<O>,
}

impl<'a, B, O> Iterator for MergedPins<B, O>
where
    B: Iterator<Item = (&'a str, Placement)>,
    O: Iterator<Item = (&'a str, Placement)>,
{
    type Item = (&'a str, Placement);

    fn next(&mut self) -> Option<Self::Item> {
        match (self.base.peek(), self.overlay.peek()) {
            (Some(b), Some(o)) if o.0 < b.0 => self.overlay.next(),
            (Some(_), _) => self.base.next(),
            (None, _) => self.overlay.next(),
        }
    }
}

#[cfg(test)]
mod tests;
