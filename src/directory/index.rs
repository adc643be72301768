//! The pin index: millions of (user id, placement) pairs in a few flat arrays.
//!
//! One heap string per pin would cost about 40 bytes of overhead each (the `String`, the
//! allocator's header and rounding) and millions of allocations at startup. Instead the ids sit
//! end to end in one byte arena, and each entry is 8 bytes beside it: where its id starts and
//! its placement (its id ends where the next entry's starts).
//!
//! Entries are sorted by ([`user hash`](super::user_hash), id bytes). A slot table indexed by the
//! hash's top bits gives, for any hash, the short run of entries (two to four on average) that
//! can hold it, so a lookup reads the slot table, one run of entries and the ids they point to,
//! which lie side by side: three cache misses for a pin, whatever the size, and no allocation.
//! Sorting by hash rather than by id also makes the startup sort a sort of integers, done in
//! cache-sized partitions (see [`PinIndex::build`]).
//!
//! The index is immutable; changes are merged into a new one (see [`PinIndex::merge`]).
//! It does not know about the overlay of recent changes or about buckets.

use std::collections::HashMap;

use super::Placement;
use super::hash::hash_bytes;

/// An immutable set of pins, sorted by (hash, id).
pub(super) struct PinIndex {
    /// `slots[s]..slots[s + 1]` are the entries whose hash's top `slot_bits` bits are `s`.
    slots: Vec<u32>,
    /// How many of the hash's top bits select a slot; 0 for a single slot.
    slot_bits: u32,
    /// One per pin, plus a last one whose `start` is the arena's end: entry `i`'s id is
    /// `arena[entries[i].start..entries[i + 1].start]`.
    entries: Vec<IndexEntry>,
    /// Every id's UTF-8 bytes, end to end, in entry order.
    arena: Vec<u8>,
}

/// Where a pin's id starts, and its placement: together, so a hit costs one cache miss here.
#[derive(Clone, Copy)]
struct IndexEntry {
    start: u32,
    placement: Placement,
}

/// The top bits of a hash that choose its build partition: 256 partitions, so 10 million pins
/// sort and gather in pieces of about 1 MB that stay in cache.
const PARTITION_BITS: u32 = 8;

impl PinIndex {
    /// Builds the index from pins in any order; of pins with the same id, the last wins.
    ///
    /// One pass over the input copies each id into one of 256 partitions by its hash's top
    /// bits; then each partition in turn is sorted and appended to the index. Sorting the whole
    /// input at once and then gathering ids from a 100 MB staging arena would cost a cache (and
    /// TLB) miss per pin; the partitions keep every step but the first pass in cache.
    ///
    /// # Panics
    ///
    /// If the ids total 4 GiB or more, or there are 2^32 pins or more (entries hold `u32`
    /// offsets to stay small; 10 million typical ids take about 120 MB).
    pub(super) fn build(pins: impl IntoIterator<Item = (String, Placement)>) -> PinIndex {
        let pins = pins.into_iter();
        // Reserve each partition's share of the expected pins up front (with room for uneven
        // shares), guessing 16 bytes an id: growing 512 vectors by doubling costs time, and
        // leaves holes in the heap that stay resident after the build.
        let share = pins.size_hint().0 >> PARTITION_BITS;
        let share = share + share / 8 + 16;
        let mut partitions: Vec<Partition> = (0..1 << PARTITION_BITS)
            .map(|_| Partition {
                arena: Vec::with_capacity(share * 16),
                staged: Vec::with_capacity(share),
            })
            .collect();
        let mut n_pins = 0usize;
        let mut n_bytes = 0usize;
        for (id, placement) in pins {
            let hash = hash_bytes(id.as_bytes());
            let partition = &mut partitions[(hash >> (64 - PARTITION_BITS)) as usize];
            let start = to_u32(partition.arena.len(), "total pin id bytes");
            partition.arena.extend_from_slice(id.as_bytes());
            let end = to_u32(partition.arena.len(), "total pin id bytes");
            partition.staged.push(Staged {
                hash,
                start,
                end,
                placement,
            });
            n_pins += 1;
            n_bytes += id.len();
        }
        to_u32(n_pins, "pin count");
        to_u32(n_bytes, "total pin id bytes");
        let mut res = Builder::with_capacity(n_pins, n_bytes);
        for mut partition in partitions {
            let arena = &partition.arena;
            let id = |staged: &Staged| &arena[staged.start as usize..staged.end as usize];
            // By hash; equal hashes (in practice, the same id given twice) by id, then by
            // position in the input (`start` grows with it), so that of duplicates the last
            // given comes last.
            partition.staged.sort_unstable_by(|a, b| {
                a.hash
                    .cmp(&b.hash)
                    .then_with(|| id(a).cmp(id(b)))
                    .then(a.start.cmp(&b.start))
            });
            for (k, staged) in partition.staged.iter().enumerate() {
                let superseded = partition
                    .staged
                    .get(k + 1)
                    .is_some_and(|next| next.hash == staged.hash && id(next) == id(staged));
                if !superseded {
                    res.push(staged.hash, id(staged), staged.placement);
                }
            }
            // `partition` is dropped here, so the staging memory shrinks as the index grows.
        }
        res.finish()
    }

    /// The number of pins.
    pub(super) fn len(&self) -> usize {
        self.entries.len() - 1
    }

    /// The placement pinned for the id whose bytes are `id` and whose user hash is `hash`.
    pub(super) fn get(&self, hash: u64, id: &[u8]) -> Option<Placement> {
        self.position(hash, id).map(|i| self.entries[i].placement)
    }

    /// The entry of the id whose bytes are `id` and whose user hash is `hash`.
    pub(super) fn position(&self, hash: u64, id: &[u8]) -> Option<usize> {
        let slot = slot_of(hash, self.slot_bits);
        let (start, end) = (self.slots[slot] as usize, self.slots[slot + 1] as usize);
        // The run is short and its ids are adjacent in the arena; comparing each costs less
        // than a finer search would.
        (start..end).find(|&i| self.id_bytes(i) == id)
    }

    /// Entry `i`'s id.
    pub(super) fn id(&self, i: usize) -> &str {
        std::str::from_utf8(self.id_bytes(i)).expect("the arena holds whole UTF-8 ids")
    }

    /// Entry `i`'s placement.
    pub(super) fn placement(&self, i: usize) -> Placement {
        self.entries[i].placement
    }

    /// Entry `i`'s id, as bytes.
    fn id_bytes(&self, i: usize) -> &[u8] {
        &self.arena[self.entries[i].start as usize..self.entries[i + 1].start as usize]
    }

    /// The entries, except those listed in `hidden` (sorted), in id order (bytewise, as `str`
    /// compares).
    ///
    /// The index is in hash order, so this sorts: a most-significant-digit radix sort with
    /// 8-byte digits. Each round reads 8 bytes of every id still tied, once, and sorts integers;
    /// comparing ids directly reads two ids at random places per comparison, which took six
    /// times as long for 10 million pins (23 s against 3.7 s). Needs 16 bytes a pin while it
    /// runs.
    pub(super) fn sorted_by_id(&self, hidden: &[u32]) -> Vec<IdKey> {
        let mut hidden = hidden.iter().peekable();
        let mut keys: Vec<IdKey> = Vec::with_capacity(self.len());
        for i in 0..self.len() {
            let i = to_u32(i, "pin count");
            if hidden.next_if_eq(&&i).is_none() {
                keys.push(IdKey::new(self.id_bytes(i as usize), 0, i));
            }
        }
        // Ranges of `keys` still to sort, with the depth of their digits. A stack rather than
        // recursion: ids are stored unchecked, and one very long shared prefix must not
        // overflow the call stack.
        let mut pending = vec![(0..keys.len(), 0)];
        while let Some((range, depth)) = pending.pop() {
            let tied = &mut keys[range.clone()];
            if depth > 0 {
                for key in tied.iter_mut() {
                    *key = IdKey::new(self.id_bytes(key.index as usize), depth, key.index);
                }
            }
            tied.sort_unstable();
            // Runs with the same digit, of ids longer than it, are still tied: they sort by
            // their next digit.
            let mut start = 0;
            while start < tied.len() {
                let first = tied[start];
                let run = tied[start..]
                    .iter()
                    .take_while(|k| (k.digit, k.tail) == (first.digit, first.tail))
                    .count();
                if run > 1 && first.tail == IdKey::MORE {
                    let offset = range.start + start;
                    pending.push((offset..offset + run, depth + IdKey::DIGIT_BYTES));
                }
                start += run;
            }
        }
        keys
    }

    /// A new index: this one with `changes` applied (`None` removes a pin).
    ///
    /// One pass over both, in (hash, id) order, so the cost is linear in the index's size and
    /// the result needs no sort.
    pub(super) fn merge(&self, changes: &HashMap<Box<str>, Option<Placement>>) -> PinIndex {
        let mut sorted: Vec<(u64, &[u8], Option<Placement>)> = changes
            .iter()
            .map(|(id, change)| (hash_bytes(id.as_bytes()), id.as_bytes(), *change))
            .collect();
        sorted.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let n_added = sorted.iter().filter(|c| c.2.is_some()).count();
        let added_bytes: usize = sorted.iter().map(|c| c.1.len()).sum();
        let mut res = Builder::with_capacity(self.len() + n_added, self.arena.len() + added_bytes);
        let mut sorted = sorted.into_iter().peekable();
        for i in 0..self.len() {
            let id = self.id_bytes(i);
            // The index does not keep hashes (8 bytes a pin); recomputing them is cheaper than
            // the memory.
            let hash = hash_bytes(id);
            while let Some(&(change_hash, change_id, change)) = sorted.peek()
                && (change_hash, change_id) < (hash, id)
            {
                if let Some(placement) = change {
                    res.push(change_hash, change_id, placement);
                }
                sorted.next();
            }
            match sorted
                .next_if(|&(change_hash, change_id, _)| (change_hash, change_id) == (hash, id))
            {
                Some((_, _, Some(placement))) => res.push(hash, id, placement),
                Some((_, _, None)) => {}
                None => res.push(hash, id, self.entries[i].placement),
            }
        }
        for (hash, id, change) in sorted {
            if let Some(placement) = change {
                res.push(hash, id, placement);
            }
        }
        res.finish()
    }

    /// Approximate heap bytes used.
    pub(super) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * size_of::<u32>()
            + self.entries.capacity() * size_of::<IndexEntry>()
            + self.arena.capacity()
    }
}

/// One entry's sort key in [`PinIndex::sorted_by_id`]: 8 bytes of its id from some depth on,
/// and how many bytes of the id are left there.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct IdKey {
    /// The id's bytes `depth..depth + 8`, big-endian, zero-padded past the id's end.
    digit: u64,
    /// How many of the id's bytes are left from `depth`, or [`IdKey::MORE`] for more than 8.
    /// Among equal digits, a shorter id is a prefix of a longer one, so it sorts first.
    tail: u8,
    /// The entry.
    pub(super) index: u32,
}

impl IdKey {
    const DIGIT_BYTES: usize = 8;
    const MORE: u8 = 9;

    fn new(id: &[u8], depth: usize, index: u32) -> IdKey {
        let rest = id.get(depth..).unwrap_or_default();
        let mut digit = [0u8; Self::DIGIT_BYTES];
        let n = rest.len().min(Self::DIGIT_BYTES);
        digit[..n].copy_from_slice(&rest[..n]);
        IdKey {
            digit: u64::from_be_bytes(digit),
            tail: if rest.len() > Self::DIGIT_BYTES {
                Self::MORE
            } else {
                rest.len() as u8
            },
            index,
        }
    }
}

/// One partition's pins while [`PinIndex::build`] runs.
struct Partition {
    /// The partition's ids, end to end, in input order.
    arena: Vec<u8>,
    staged: Vec<Staged>,
}

/// A pin in a [`Partition`].
struct Staged {
    hash: u64,
    /// The id is `arena[start..end]` of its partition.
    start: u32,
    end: u32,
    placement: Placement,
}

/// Collects entries for a [`PinIndex`].
struct Builder {
    entries: Vec<IndexEntry>,
    arena: Vec<u8>,
    /// Each entry's hash's top 32 bits, to fill the slot table once the number of entries,
    /// and so the table's size, is known.
    tops: Vec<u32>,
}

impl Builder {
    fn with_capacity(n_entries: usize, n_bytes: usize) -> Builder {
        Builder {
            entries: Vec::with_capacity(n_entries + 1),
            arena: Vec::with_capacity(n_bytes),
            tops: Vec::with_capacity(n_entries),
        }
    }

    /// Appends an entry; entries must come in (hash, id) order.
    fn push(&mut self, hash: u64, id: &[u8], placement: Placement) {
        self.tops.push((hash >> 32) as u32);
        self.entries.push(IndexEntry {
            start: to_u32(self.arena.len(), "total pin id bytes"),
            placement,
        });
        self.arena.extend_from_slice(id);
    }

    fn finish(mut self) -> PinIndex {
        let n = self.tops.len();
        // The end marker: its placement is never read.
        self.entries.push(IndexEntry {
            start: to_u32(self.arena.len(), "total pin id bytes"),
            placement: Placement {
                home: 0,
                replica: 0,
            },
        });
        let slot_bits = slot_bits(n);
        // Count the entries of each slot, then turn the counts into starting positions.
        let mut slots = vec![0u32; (1usize << slot_bits) + 1];
        for &top in &self.tops {
            slots[slot_of(u64::from(top) << 32, slot_bits) + 1] += 1;
        }
        for s in 1..slots.len() {
            slots[s] += slots[s - 1];
        }
        debug_assert_eq!(slots[slots.len() - 1] as usize, n);
        debug_assert!(self.tops.is_sorted(), "entries come in hash order");
        self.entries.shrink_to_fit();
        self.arena.shrink_to_fit();
        PinIndex {
            slots,
            slot_bits,
            entries: self.entries,
            arena: self.arena,
        }
    }
}

/// How many top hash bits select a slot for `n` entries: `floor(log2(n)) - 1`, so each slot
/// holds two to four entries on average and the slot table costs 1 to 2 bytes per entry.
fn slot_bits(n: usize) -> u32 {
    n.checked_ilog2().map_or(0, |log| log.saturating_sub(1))
}

/// The slot of `hash` in a table of `2^slot_bits` slots: the hash's top bits.
fn slot_of(hash: u64, slot_bits: u32) -> usize {
    // A shift by 64 (one slot) is out of range for `>>`; `checked_shr` makes it 0.
    hash.checked_shr(64 - slot_bits).unwrap_or(0) as usize
}

fn to_u32(n: usize, what: &str) -> u32 {
    u32::try_from(n).unwrap_or_else(|_| panic!("{what} ({n}) exceeds the pin index's u32 offsets"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(home: u16) -> Placement {
        Placement {
            home,
            replica: home + 1,
        }
    }

    #[test]
    fn slot_bits_keep_two_to_four_entries_a_slot() {
        assert_eq!(slot_bits(0), 0);
        assert_eq!(slot_bits(3), 0);
        assert_eq!(slot_bits(4), 1);
        assert_eq!(slot_bits(7), 1);
        assert_eq!(slot_bits(10_000_000), 22);
        assert_eq!(slot_of(u64::MAX, 0), 0);
        assert_eq!(slot_of(u64::MAX, 22), (1 << 22) - 1);
    }

    #[test]
    fn the_last_duplicate_wins_in_every_partition() {
        let pins = (0..2000).flat_map(|i| {
            [
                (format!("u{i}"), placement(1)),
                (format!("x{i}"), placement(9)),
                (format!("u{i}"), placement(2)),
            ]
        });
        let index = PinIndex::build(pins);
        assert_eq!(index.len(), 4000);
        for i in 0..2000 {
            let id = format!("u{i}");
            assert_eq!(
                index.get(hash_bytes(id.as_bytes()), id.as_bytes()),
                Some(placement(2)),
                "{id}"
            );
        }
    }

    #[test]
    fn finds_every_pin_and_nothing_else() {
        for n in [0usize, 1, 2, 5, 100, 5000] {
            let index =
                PinIndex::build((0..n).rev().map(|i| (format!("u{i}"), placement(i as u16))));
            assert_eq!(index.len(), n);
            for i in 0..n {
                let id = format!("u{i}");
                assert_eq!(
                    index.get(hash_bytes(id.as_bytes()), id.as_bytes()),
                    Some(placement(i as u16))
                );
            }
            for id in ["", "u", "v0", "u-1", &format!("u{n}")] {
                assert_eq!(
                    index.get(hash_bytes(id.as_bytes()), id.as_bytes()),
                    None,
                    "{id:?}"
                );
            }
        }
    }

    #[test]
    fn a_colliding_hash_still_compares_ids() {
        // Look an id up under another id's hash: the slot is right, the id is not.
        let index = PinIndex::build([("a".to_owned(), placement(1))]);
        assert_eq!(index.get(hash_bytes(b"a"), b"b"), None);
    }

    #[test]
    fn sorted_by_id_is_bytewise_order() {
        // Shared prefixes longer than one 8-byte digit, ids that are prefixes of others
        // (including ones continuing with zero bytes, which look like digit padding), the
        // empty id, multi-byte UTF-8, and ids far longer than valid ones.
        let mut ids: Vec<String> = vec![
            "".into(),
            "a".into(),
            "ab".into(),
            "ab\0".into(),
            "ab\0\0\0\0\0\0".into(),
            "ab\0\0\0\0\0\0\0\0\0c".into(),
            "ab\0\0\0\0\0\0\0\0\0".into(),
            "abcdefgh".into(),
            "abcdefghi".into(),
            "abcdefgh\0".into(),
            "ユーザー".into(),
            "ユーザー42".into(),
            "\u{10ffff}".into(),
        ];
        // A prefix shared over 12,500 digits.
        ids.push(format!("{}b", "x".repeat(100_000)));
        ids.push(format!("{}a", "x".repeat(100_000)));
        for i in 0..3000 {
            ids.push(format!("user-{i}"));
            ids.push(format!("a-very-long-shared-prefix-of-thirty-{i}"));
            ids.push(format!("{i}"));
        }
        let index = PinIndex::build(ids.iter().map(|id| (id.clone(), placement(1))));
        let sorted: Vec<&str> = index
            .sorted_by_id(&[])
            .iter()
            .map(|key| index.id(key.index as usize))
            .collect();
        ids.sort_unstable();
        assert_eq!(sorted, ids);

        let hide = |id: &str| {
            index
                .position(hash_bytes(id.as_bytes()), id.as_bytes())
                .map(|i| i as u32)
        };
        let mut hidden: Vec<u32> = ["ab", "user-7", ""].into_iter().filter_map(hide).collect();
        hidden.sort_unstable();
        let shown: Vec<&str> = index
            .sorted_by_id(&hidden)
            .iter()
            .map(|key| index.id(key.index as usize))
            .collect();
        ids.retain(|id| !["ab", "user-7", ""].contains(&id.as_str()));
        assert_eq!(shown, ids);
    }

    #[test]
    fn merge_applies_changes_in_one_pass() {
        let index = PinIndex::build((0..1000).map(|i| (format!("u{i}"), placement(1))));
        let changes: HashMap<Box<str>, Option<Placement>> = [
            ("u1".into(), None),
            ("u2".into(), Some(placement(7))),
            ("new".into(), Some(placement(8))),
            ("absent".into(), None),
        ]
        .into_iter()
        .collect();
        let merged = index.merge(&changes);
        assert_eq!(merged.len(), 1000);
        let get = |id: &str| merged.get(hash_bytes(id.as_bytes()), id.as_bytes());
        assert_eq!(get("u1"), None);
        assert_eq!(get("u2"), Some(placement(7)));
        assert_eq!(get("new"), Some(placement(8)));
        assert_eq!(get("absent"), None);
        assert_eq!(get("u999"), Some(placement(1)));
    }
}
