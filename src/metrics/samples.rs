//! Samples the query path could not hand over: the traffic record's and the query log's
//! bounded channels drop a sample rather than make a query wait, and each drop is counted here.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use super::names::SAMPLES_DROPPED_TOTAL;
use super::register;

/// Which sampler dropped a sample: the label of [`SAMPLES_DROPPED_TOTAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampler {
    /// The traffic record behind `GET /v1/traffic` and simulations (`traffic`).
    Traffic,
    /// The query log (`query_log`).
    QueryLog,
}

impl Sampler {
    fn label(self) -> &'static str {
        match self {
            Sampler::Traffic => "traffic",
            Sampler::QueryLog => "query_log",
        }
    }
}

/// Handles of [`SAMPLES_DROPPED_TOTAL`], resolved at construction: the query path only
/// increments an atomic.
#[derive(Clone)]
pub struct SampleDrops {
    traffic: IntCounter,
    query_log: IntCounter,
}

impl SampleDrops {
    pub(super) fn register(registry: &Registry) -> SampleDrops {
        let vec = IntCounterVec::new(
            Opts::new(
                SAMPLES_DROPPED_TOTAL,
                "Samples dropped because their bounded channel was full (or the traffic window \
                 held its most networks), by record.",
            ),
            &["record"],
        )
        .expect("valid metric name and labels");
        register(registry, &vec);
        let handle = |sampler: Sampler| vec.with_label_values(&[sampler.label()]);
        SampleDrops {
            traffic: handle(Sampler::Traffic),
            query_log: handle(Sampler::QueryLog),
        }
    }

    fn counter(&self, sampler: Sampler) -> &IntCounter {
        match sampler {
            Sampler::Traffic => &self.traffic,
            Sampler::QueryLog => &self.query_log,
        }
    }

    /// Counts one dropped sample. Query path: one atomic add.
    pub fn record(&self, sampler: Sampler) {
        self.counter(sampler).inc();
    }

    /// Brings the count up to `total`, a sampler's own running count (read at scrape time, for
    /// samplers below `metrics` that cannot count here themselves).
    pub fn catch_up(&self, sampler: Sampler, total: u64) {
        let counter = self.counter(sampler);
        let seen = counter.get();
        if total > seen {
            counter.inc_by(total - seen);
        }
    }

    /// The count so far.
    pub fn get(&self, sampler: Sampler) -> u64 {
        self.counter(sampler).get()
    }
}
