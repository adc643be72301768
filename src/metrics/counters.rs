//! Per-configuration counter handles resolved ahead of time: answers per (service, datacenter)
//! and per-service counters such as failed-open decisions.
//!
//! A snapshot carries these so the query path counts by index, never looking up a label set:
//! each handle is a slot number in the thread's own shard (`shards.rs`), summed at scrape time.

use std::fmt;
use std::sync::Arc;

use super::shards::Shards;

#[cfg(doc)]
use super::Metrics;

/// Answer counters for one configuration: one handle per (service, datacenter) pair.
///
/// Built by [`Metrics::answer_counters`] when a configuration is loaded and kept in the snapshot.
/// Cloning is one reference-count increment. The default value counts nothing, for snapshots
/// built without metrics (tests, `--check-config`).
#[derive(Clone, Default)]
pub struct AnswerCounters {
    /// Row-major: the slot of (service, datacenter) is at `service * n_datacenters +
    /// datacenter`. Shared immutably (`Arc<[_]>`): the counts are in the shards.
    pub(super) counters: Arc<[u32]>,
    /// Where the counts go; `None` counts nothing.
    pub(super) shards: Option<Arc<Shards>>,
    /// Row width: the number of datacenters in the configuration.
    pub(super) n_datacenters: usize,
}

impl AnswerCounters {
    /// Counts one answer for `service` whose first-ranked datacenter is `datacenter`.
    ///
    /// Both are indexes into the lists given to [`Metrics::answer_counters`]; an index out of range
    /// counts nothing (the query path never fails over a metric).
    pub fn inc(&self, service: usize, datacenter: usize) {
        if datacenter >= self.n_datacenters {
            return;
        }
        let index = service
            .checked_mul(self.n_datacenters)
            .and_then(|row| row.checked_add(datacenter));
        if let (Some(&slot), Some(shards)) = (
            index.and_then(|index| self.counters.get(index)),
            &self.shards,
        ) {
            shards.with(|shard| shard.add_slot(slot));
        }
    }
}

impl fmt::Debug for AnswerCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The handles' own Debug output is long and says nothing useful; the shape is enough.
        let n_services = self
            .counters
            .len()
            .checked_div(self.n_datacenters)
            .unwrap_or(0);
        f.debug_struct("AnswerCounters")
            .field("n_services", &n_services)
            .field("n_datacenters", &self.n_datacenters)
            .finish()
    }
}

/// Per-service counters for one configuration, such as failed-open decisions.
///
/// Built by [`Metrics::failed_open_counters`]; cheap to clone; the default counts nothing.
#[derive(Clone, Default)]
pub struct ServiceCounters {
    /// One slot per service, in configuration order. Shared immutably: the counts are in the
    /// shards.
    pub(super) counters: Arc<[u32]>,
    /// Where the counts go; `None` counts nothing.
    pub(super) shards: Option<Arc<Shards>>,
}

impl ServiceCounters {
    /// Counts one event for `service`, an index into the list given when these were built; an
    /// index out of range counts nothing.
    pub fn inc(&self, service: usize) {
        if let (Some(&slot), Some(shards)) = (self.counters.get(service), &self.shards) {
            shards.with(|shard| shard.add_slot(slot));
        }
    }
}

impl fmt::Debug for ServiceCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceCounters")
            .field("n_services", &self.counters.len())
            .finish()
    }
}

/// One counter handle resolved ahead of time (a banned-query rule's count): the query path
/// counts into its slot without a label lookup. The default counts nothing.
#[derive(Clone, Default)]
pub struct Counter(pub(super) Option<Slotted>);

/// A series' slot in a set of shards, and the sum its count started from (a slot may have
/// served a series forgotten before).
#[derive(Clone)]
pub(super) struct Slotted {
    pub(super) shards: Arc<Shards>,
    pub(super) slot: u32,
    pub(super) base: u64,
}

impl Counter {
    /// Counts one.
    pub fn inc(&self) {
        if let Some(slotted) = &self.0 {
            slotted.shards.with(|shard| shard.add_slot(slotted.slot));
        }
    }

    /// The count so far (0 for the default, which counts nothing): a sum over every thread's
    /// shard, so not for the query path.
    pub fn get(&self) -> u64 {
        self.0.as_ref().map_or(0, |slotted| {
            slotted
                .shards
                .sum_slot(slotted.slot)
                .wrapping_sub(slotted.base)
        })
    }

    /// Whether it counts into a registered metric (not the default).
    pub fn is_resolved(&self) -> bool {
        self.0.is_some()
    }
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Counter")
            .field(&self.0.as_ref().map(|_| self.get()))
            .finish()
    }
}
