//! Per-configuration counter handles resolved ahead of time: answers per (service, datacenter)
//! and per-service counters such as failed-open decisions.
//!
//! A snapshot carries these so the query path increments an atomic by index, never looking up a
//! label set.

use std::fmt;
use std::sync::Arc;

use prometheus::IntCounter;

#[cfg(doc)]
use super::Metrics;

/// Answer counters for one configuration: one handle per (service, datacenter) pair.
///
/// Built by [`Metrics::answer_counters`] when a configuration is loaded and kept in the snapshot.
/// Cloning is one reference-count increment. The default value counts nothing, for snapshots
/// built without metrics (tests, `--check-config`).
#[derive(Clone, Default)]
pub struct AnswerCounters {
    /// Row-major: the handle for (service, datacenter) is at `service * n_datacenters +
    /// datacenter`. Shared immutably (`Arc<[_]>`): the handles themselves are atomics.
    pub(super) counters: Arc<[IntCounter]>,
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
        if let Some(counter) = index.and_then(|index| self.counters.get(index)) {
            counter.inc();
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
    /// One handle per service, in configuration order. Shared immutably: the handles are atomics.
    pub(super) counters: Arc<[IntCounter]>,
}

impl ServiceCounters {
    /// Counts one event for `service`, an index into the list given when these were built; an
    /// index out of range counts nothing.
    pub fn inc(&self, service: usize) {
        if let Some(counter) = self.counters.get(service) {
            counter.inc();
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
/// increments it without a label lookup. The default counts nothing.
#[derive(Clone, Default)]
pub struct Counter(pub(super) Option<IntCounter>);

impl Counter {
    /// Counts one.
    pub fn inc(&self) {
        if let Some(counter) = &self.0 {
            counter.inc();
        }
    }
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Counter")
            .field(&self.0.as_ref().map(IntCounter::get))
            .finish()
    }
}
