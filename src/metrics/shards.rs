//! Per-thread counter shards: every count the query path makes goes into cells that only the
//! counting thread writes, and a scrape sums them.
//!
//! With one counter per series shared by every thread, two UDP workers answering for the same
//! (service, datacenter) write the same cache line on every query, and the line travels between
//! their cores (each `lock xadd` waits for it): two workers on two cores answered fewer geo
//! queries than one. Here each thread that counts for a [`Shards`] set claims a [`Shard`] of
//! its own (a thread-local, on its first count) and keeps it until it exits; a shard is
//! cache-line aligned and written by its owner alone, so a count is a plain load and store on
//! a line no other core writes. A scrape reads every shard with relaxed loads and adds them up:
//! the total is exact once the counting threads' writes are visible, and never counts one event
//! twice or loses one.
//!
//! A shard holds fixed cells for the fixed vocabularies (query type x rcode, the duration
//! buckets and sum, transport events, directory lookups) and *slots* for series made from the
//! configuration (answers by service and datacenter, failed-open decisions, banned-query
//! rules): `Metrics` gives each such series a slot number, and every shard has a cell at that
//! number, in chunks allocated the first time the shard counts into one.
//!
//! When a thread exits, its shard goes back to the set's free list with its counts, and the
//! next new thread takes it over: totals keep every count, and threads that come and go do not
//! grow the set. This module knows nothing of Prometheus: `mod.rs` turns the sums into series.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use super::labels::{DnsEvent, QueryType, Rcode};
use super::names::QUERY_DURATION_BUCKETS;

/// Cells per chunk of a shard's slots.
const CHUNK: usize = 256;
/// Chunks per shard at most: slots (configured series) beyond `CHUNK * MAX_CHUNKS` count
/// nothing.
const MAX_CHUNKS: usize = 1024;
/// The number of slots a set can give out.
pub(super) const MAX_SLOTS: u32 = (CHUNK * MAX_CHUNKS) as u32;
/// Duration buckets: one per upper bound, plus the one above the last (`+Inf`).
pub(super) const N_BUCKETS: usize = QUERY_DURATION_BUCKETS.len() + 1;

/// One count, written by one thread only.
#[derive(Default)]
pub(super) struct Cell(AtomicU64);

impl Cell {
    /// Adds `n`: a load and a store, not a read-modify-write, because only the shard's owner
    /// ever writes (see [`Shards::with`]); the atomic type is for the scrape's concurrent reads.
    pub(super) fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// The count so far, for a scrape.
    pub(super) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One thread's counts. Aligned to 128 bytes (two cache lines, as Intel's adjacent-line
/// prefetcher pairs them) so that no other shard's cells share its lines.
#[repr(align(128))]
pub(super) struct Shard {
    /// Indexed `[QueryType as usize][Rcode as usize]`.
    pub(super) queries: [[Cell; Rcode::ALL.len()]; QueryType::ALL.len()],
    /// Query durations: how many fell in each bucket (not cumulative), by bucket.
    pub(super) duration_buckets: [Cell; N_BUCKETS],
    /// The sum of query durations, in seconds, as `f64` bits.
    pub(super) duration_sum: Cell,
    /// Indexed by [`DnsEvent`].
    pub(super) events: [Cell; DnsEvent::ALL.len()],
    /// Directory lookups, indexed `[LookupSource as usize][LookupReason as usize]`.
    pub(super) lookups: [[Cell; 3]; 2],
    /// Lookups served by the replica.
    pub(super) failovers: Cell,
    /// The cells of configured series, by slot, in chunks made on first use.
    slots: Box<[OnceLock<Box<Chunk>>]>,
}

/// `CHUNK` slot cells, aligned as a shard is.
#[repr(align(128))]
struct Chunk([Cell; CHUNK]);

impl Shard {
    fn new() -> Shard {
        Shard {
            queries: Default::default(),
            duration_buckets: Default::default(),
            duration_sum: Cell::default(),
            events: Default::default(),
            lookups: Default::default(),
            failovers: Cell::default(),
            slots: (0..MAX_CHUNKS).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Counts one query of `qtype` answered with `rcode`, handled in `seconds` (finite, not
    /// negative).
    pub(super) fn query(&self, qtype: QueryType, rcode: Rcode, seconds: f64) {
        self.queries[qtype as usize][rcode as usize].add(1);
        // The first bucket whose upper bound holds it (`le`, as Prometheus buckets are).
        let bucket = QUERY_DURATION_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(QUERY_DURATION_BUCKETS.len());
        self.duration_buckets[bucket].add(1);
        let sum = f64::from_bits(self.duration_sum.get()) + seconds;
        self.duration_sum.0.store(sum.to_bits(), Ordering::Relaxed);
    }

    /// Counts one into `slot` (one made by [`Shards`]' owner); a slot out of range counts
    /// nothing.
    pub(super) fn add_slot(&self, slot: u32) {
        let slot = slot as usize;
        let Some(chunk) = self.slots.get(slot / CHUNK) else {
            return;
        };
        // The first count into a chunk allocates it: once per chunk and shard, not per query.
        let chunk = chunk.get_or_init(|| Box::new(Chunk(std::array::from_fn(|_| Cell::default()))));
        chunk.0[slot % CHUNK].add(1);
    }

    /// The count in `slot`, for a scrape.
    fn slot(&self, slot: u32) -> u64 {
        let slot = slot as usize;
        self.slots
            .get(slot / CHUNK)
            .and_then(OnceLock::get)
            .map_or(0, |chunk| chunk.0[slot % CHUNK].get())
    }
}

/// The shards of one `Metrics`: one per thread that counts into it.
pub(super) struct Shards {
    /// Every shard ever made for this set, for scrapes. A `Mutex` because threads add to it
    /// (once each) while scrapes read it; the query path takes it only on a thread's first count.
    all: Mutex<Vec<Arc<Shard>>>,
    /// Shards whose thread has exited, for the next new thread.
    free: Mutex<Vec<Arc<Shard>>>,
    /// Counts from threads whose thread-local storage is already gone (a count made while the
    /// thread exits). The lock makes its writers one at a time, as a shard's writer must be.
    orphan: Mutex<Shard>,
}

/// A shard this thread owns, and the set it came from.
struct Owned {
    shard: Arc<Shard>,
    set: Weak<Shards>,
}

impl Drop for Owned {
    /// The thread is exiting (or its set is gone): the shard, counts and all, goes back to its
    /// set for another thread.
    fn drop(&mut self) {
        if let Some(set) = self.set.upgrade() {
            set.free
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Arc::clone(&self.shard));
        }
    }
}

thread_local! {
    /// This thread's shards, one per set it has counted into (a server has one set; tests
    /// make many).
    static OWNED: RefCell<Vec<Owned>> = const { RefCell::new(Vec::new()) };
}

impl Shards {
    /// An empty set.
    pub(super) fn new() -> Arc<Shards> {
        Arc::new(Shards {
            all: Mutex::new(Vec::new()),
            free: Mutex::new(Vec::new()),
            orphan: Mutex::new(Shard::new()),
        })
    }

    /// Runs `count` on this thread's shard of the set, claiming one on the thread's first count.
    ///
    /// Only the owning thread writes a shard: it is reached only through this thread-local
    /// (or, once a thread's storage is gone, through the orphan shard's lock), and a shard
    /// passes to another thread only after its owner has exited, through the free list's lock.
    pub(super) fn with(self: &Arc<Shards>, count: impl FnOnce(&Shard)) {
        let mut count = Some(count);
        let done = OWNED.try_with(|owned| {
            // The common case: a shared borrow and a pointer compare, no reference counting.
            if let Some(own) = owned
                .borrow()
                .iter()
                .find(|own| std::ptr::eq(own.set.as_ptr(), Arc::as_ptr(self)))
            {
                if let Some(count) = count.take() {
                    count(&own.shard);
                }
                return;
            }
            let shard = self.claim();
            if let Some(count) = count.take() {
                count(&shard);
            }
            let mut owned = owned.borrow_mut();
            // Sets that are gone (a test's `Metrics`) need their entries no more.
            owned.retain(|own| own.set.strong_count() > 0);
            owned.push(Owned {
                shard,
                set: Arc::downgrade(self),
            });
        });
        if done.is_err()
            && let Some(count) = count.take()
        {
            count(&self.orphan.lock().unwrap_or_else(PoisonError::into_inner));
        }
    }

    /// A shard for a thread that has none: one left by an exited thread, else a new one.
    fn claim(&self) -> Arc<Shard> {
        if let Some(shard) = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
        {
            return shard;
        }
        let shard = Arc::new(Shard::new());
        self.all
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&shard));
        shard
    }

    /// Runs `read` on every shard, for a scrape. Counting goes on meanwhile: each cell is read
    /// once, so a sum is a count that was true at some moment during the scrape.
    pub(super) fn for_each(&self, mut read: impl FnMut(&Shard)) {
        let all = self.all.lock().unwrap_or_else(PoisonError::into_inner);
        for shard in all.iter() {
            read(shard);
        }
        drop(all);
        read(&self.orphan.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// The sum of `slot` over every shard.
    pub(super) fn sum_slot(&self, slot: u32) -> u64 {
        let mut sum = 0u64;
        self.for_each(|shard| sum = sum.wrapping_add(shard.slot(slot)));
        sum
    }

    /// How many shards the set has made (threads that counted at the same time, at most).
    #[cfg(test)]
    pub(super) fn n_shards(&self) -> usize {
        self.all
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
