//! Prometheus metrics: one [`Metrics`] value owns a private `Registry` and typed handles into it.
//!
//! The DNS query path (many tasks, hundreds of thousands of queries a second) only ever touches
//! plain `IntCounter`/`Histogram` handles that were resolved ahead of time, so recording a query is
//! a few atomic adds and never a lock: prometheus' `*Vec::with_label_values` takes a read lock on
//! the vec's child map, so every label combination the query path can use is resolved once, at
//! construction ([`QueryType`] x [`Rcode`]) or when a configuration is loaded
//! ([`Metrics::answer_counters`], [`Metrics::failed_open_counters`]), and the hot path indexes
//! arrays. Every label is bounded: enums, or names taken from the configuration; never a client
//! address or a qname.
//!
//! This module deliberately knows nothing about hickory, HTTP or the routing types: the `dns` and
//! `control` modules convert at their boundary (rcode and qtype as numbers, datacenters and
//! services as indexes into the configuration's lists).

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{
    GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Queries answered, by query type and response code.
pub const DNS_QUERIES_TOTAL: &str = "meridian_dns_queries_total";
/// Time spent handling one query, from decoded request to encoded response.
pub const DNS_QUERY_DURATION_SECONDS: &str = "meridian_dns_query_duration_seconds";
/// Routed answers, by service and by the datacenter ranked first.
pub const DNS_ANSWERS_TOTAL: &str = "meridian_dns_answers_total";
/// Routing decisions that failed open: every datacenter was ineligible, so all were treated as
/// healthy.
pub const ROUTING_FAILED_OPEN_TOTAL: &str = "meridian_routing_failed_open_total";
/// Age of a datacenter's latest health/load report.
pub const DATACENTER_REPORT_AGE_SECONDS: &str = "meridian_datacenter_report_age_seconds";
/// A datacenter's state: 1 for its current state, 0 for the others.
pub const DATACENTER_STATE: &str = "meridian_datacenter_state";
/// A datacenter's reported load divided by its configured capacity.
pub const DATACENTER_UTILIZATION_RATIO: &str = "meridian_datacenter_utilization_ratio";
/// Configuration reloads, by outcome ("ok" or "failed").
pub const CONFIG_RELOADS_TOTAL: &str = "meridian_config_reloads_total";
/// Control-plane HTTP requests, by route template and status code.
pub const CONTROL_REQUESTS_TOTAL: &str = "meridian_control_requests_total";
/// Generation of the snapshot currently serving queries.
pub const SNAPSHOT_GENERATION: &str = "meridian_snapshot_generation";
/// User directory lookups (HTTP and DNS), by where the placement came from and why the serving
/// datacenter was chosen.
pub const DIRECTORY_LOOKUPS_TOTAL: &str = "meridian_directory_lookups_total";
/// User directory lookups served from the replica because the home was ineligible.
pub const DIRECTORY_FAILOVERS_TOTAL: &str = "meridian_directory_failovers_total";
/// Users pinned in the directory.
pub const DIRECTORY_PINS: &str = "meridian_directory_pins";

/// Where a directory lookup's placement came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupSource {
    /// The user's hash bucket.
    Bucket,
    /// A per-user pin.
    Pin,
}

/// Why a directory lookup chose its serving datacenter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupReason {
    /// The home datacenter is eligible.
    Home,
    /// The home is not; the replica is.
    Replica,
    /// Neither is; the home serves anyway.
    Fallback,
}

/// Upper bounds of the query duration histogram: 10 µs to 100 ms in 1-2.5-5 steps.
///
/// An authoritative answer from memory takes tens of microseconds; the upper buckets are there to
/// catch scheduler stalls, not normal work.
pub const QUERY_DURATION_BUCKETS: [f64; 13] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1,
];

/// The query types we count separately; everything else is [`QueryType::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryType {
    /// IPv4 address (1).
    A,
    /// IPv6 address (28).
    Aaaa,
    /// Any type (255, RFC 8482 answers it minimally).
    Any,
    /// Canonical name (5).
    Cname,
    /// Mail exchange (15).
    Mx,
    /// Name server (2).
    Ns,
    /// Start of authority (6).
    Soa,
    /// Text (16).
    Txt,
    /// Service locator (33).
    Srv,
    /// Certification authority authorization (257).
    Caa,
    /// Domain name pointer (12).
    Ptr,
    /// Any other type code; one label so that clients cannot grow the label set.
    Other,
}

impl QueryType {
    /// Every query type, in label-array order.
    pub const ALL: [QueryType; 12] = [
        QueryType::A,
        QueryType::Aaaa,
        QueryType::Any,
        QueryType::Cname,
        QueryType::Mx,
        QueryType::Ns,
        QueryType::Soa,
        QueryType::Txt,
        QueryType::Srv,
        QueryType::Caa,
        QueryType::Ptr,
        QueryType::Other,
    ];

    /// The query type for a numeric DNS TYPE code (RFC 1035 §3.2.2 and later registrations).
    pub fn from_code(code: u16) -> QueryType {
        match code {
            1 => QueryType::A,
            2 => QueryType::Ns,
            5 => QueryType::Cname,
            6 => QueryType::Soa,
            12 => QueryType::Ptr,
            15 => QueryType::Mx,
            16 => QueryType::Txt,
            28 => QueryType::Aaaa,
            33 => QueryType::Srv,
            255 => QueryType::Any,
            257 => QueryType::Caa,
            _ => QueryType::Other,
        }
    }

    /// The `qtype` label value: the type's mnemonic in upper case, or "OTHER".
    pub fn label(self) -> &'static str {
        match self {
            QueryType::A => "A",
            QueryType::Aaaa => "AAAA",
            QueryType::Any => "ANY",
            QueryType::Cname => "CNAME",
            QueryType::Mx => "MX",
            QueryType::Ns => "NS",
            QueryType::Soa => "SOA",
            QueryType::Txt => "TXT",
            QueryType::Srv => "SRV",
            QueryType::Caa => "CAA",
            QueryType::Ptr => "PTR",
            QueryType::Other => "OTHER",
        }
    }
}

/// The response codes we count separately; everything else is [`Rcode::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rcode {
    /// No error (0).
    NoError,
    /// Format error (1).
    FormErr,
    /// Server failure (2).
    ServFail,
    /// Name does not exist (3).
    NxDomain,
    /// Not implemented (4).
    NotImp,
    /// Refused (5).
    Refused,
    /// Bad EDNS version (16, RFC 6891 §9).
    BadVers,
    /// Any other response code.
    Other,
}

impl Rcode {
    /// Every response code, in label-array order.
    pub const ALL: [Rcode; 8] = [
        Rcode::NoError,
        Rcode::FormErr,
        Rcode::ServFail,
        Rcode::NxDomain,
        Rcode::NotImp,
        Rcode::Refused,
        Rcode::BadVers,
        Rcode::Other,
    ];

    /// The response code for a numeric RCODE.
    ///
    /// `code` is the full 12-bit value: RFC 6891 §6.1.3 puts its upper 8 bits in the OPT record,
    /// which is how BADVERS (16) can exist in a 4-bit header field.
    pub fn from_code(code: u16) -> Rcode {
        match code {
            0 => Rcode::NoError,
            1 => Rcode::FormErr,
            2 => Rcode::ServFail,
            3 => Rcode::NxDomain,
            4 => Rcode::NotImp,
            5 => Rcode::Refused,
            16 => Rcode::BadVers,
            _ => Rcode::Other,
        }
    }

    /// The `rcode` label value: the code's mnemonic in upper case, or "OTHER".
    pub fn label(self) -> &'static str {
        match self {
            Rcode::NoError => "NOERROR",
            Rcode::FormErr => "FORMERR",
            Rcode::ServFail => "SERVFAIL",
            Rcode::NxDomain => "NXDOMAIN",
            Rcode::NotImp => "NOTIMP",
            Rcode::Refused => "REFUSED",
            Rcode::BadVers => "BADVERS",
            Rcode::Other => "OTHER",
        }
    }
}

/// A datacenter's state as exported by [`DATACENTER_STATE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DcStateLabel {
    /// Reporting, and its latest report is recent.
    Fresh,
    /// Its latest report is older than the freshness window.
    Stale,
    /// Reported down, or its report has expired.
    Down,
    /// Has never reported since the process started.
    Unreported,
    /// Drained by an operator: never ranked first.
    Drained,
}

impl DcStateLabel {
    /// Every state, in the order their series are written.
    pub const ALL: [DcStateLabel; 5] = [
        DcStateLabel::Fresh,
        DcStateLabel::Stale,
        DcStateLabel::Down,
        DcStateLabel::Unreported,
        DcStateLabel::Drained,
    ];

    /// The `state` label value, in lower case.
    pub fn label(self) -> &'static str {
        match self {
            DcStateLabel::Fresh => "fresh",
            DcStateLabel::Stale => "stale",
            DcStateLabel::Down => "down",
            DcStateLabel::Unreported => "unreported",
            DcStateLabel::Drained => "drained",
        }
    }
}

/// Answer counters for one configuration: one handle per (service, datacenter) pair.
///
/// Built by [`Metrics::answer_counters`] when a configuration is loaded and kept in the snapshot.
/// Cloning is one reference-count increment. The default value counts nothing, for snapshots
/// built without metrics (tests, `--check-config`).
#[derive(Clone, Default)]
pub struct AnswerCounters {
    /// Row-major: the handle for (service, datacenter) is at `service * n_datacenters +
    /// datacenter`. Shared immutably (`Arc<[_]>`): the handles themselves are atomics.
    counters: Arc<[IntCounter]>,
    /// Row width: the number of datacenters in the configuration.
    n_datacenters: usize,
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
    counters: Arc<[IntCounter]>,
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

/// All of meridian's metrics: a private registry plus typed handles into it.
///
/// `Send + Sync`; the application shares one in an `Arc`. Each value has its own registry (not
/// prometheus' global one), so tests can create as many as they like.
pub struct Metrics {
    /// The registry every metric below is registered in; [`Metrics::render`] gathers it.
    registry: Registry,
    /// Query counters indexed `[QueryType as usize][Rcode as usize]`, resolved at construction so
    /// that the query path indexes an array instead of locking the vec's child map.
    queries: [[IntCounter; Rcode::ALL.len()]; QueryType::ALL.len()],
    /// Query handling time; a plain histogram, whose `observe` is lock-free.
    query_duration: Histogram,
    /// Kept to resolve per-configuration handles ([`Metrics::answer_counters`]) and to forget
    /// series; never touched per query.
    answers: IntCounterVec,
    /// As `answers`, for failed-open decisions.
    failed_open: IntCounterVec,
    /// Per-datacenter gauges, set by the control plane when a datacenter's state changes.
    report_age: GaugeVec,
    /// See [`DATACENTER_STATE`].
    state: IntGaugeVec,
    /// See [`DATACENTER_UTILIZATION_RATIO`].
    utilization: GaugeVec,
    /// `outcome="ok"`, resolved at construction.
    reloads_ok: IntCounter,
    /// `outcome="failed"`, resolved at construction.
    reloads_failed: IntCounter,
    /// Control-plane requests; resolved per request, which is fine off the query path.
    control_requests: IntCounterVec,
    /// See [`SNAPSHOT_GENERATION`].
    generation: IntGauge,
    /// Directory lookups indexed `[LookupSource as usize][LookupReason as usize]`, resolved at
    /// construction (lookups are hot).
    lookups: [[IntCounter; 3]; 2],
    /// See [`DIRECTORY_FAILOVERS_TOTAL`].
    failovers: IntCounter,
    /// See [`DIRECTORY_PINS`].
    pins: IntGauge,
    /// Serializes [`Metrics::render`] with the multi-series updates (`set_datacenter_state`,
    /// `forget_datacenter`, `forget_service`), so a scrape never sees a datacenter in two states
    /// or in none. A `Mutex` because both sides are control-plane work and the sections are
    /// short; the query path never takes it.
    scrape: Mutex<()>,
}

impl Metrics {
    /// Creates every metric in a new registry.
    ///
    /// Query counters for every [`QueryType`] x [`Rcode`] pair and both reload outcomes are
    /// created at zero, so they are exported before the first event.
    pub fn new() -> Metrics {
        let registry = Registry::new();

        let queries_vec = IntCounterVec::new(
            Opts::new(
                DNS_QUERIES_TOTAL,
                "DNS queries answered, by qtype and rcode.",
            ),
            &["qtype", "rcode"],
        )
        .expect("valid metric name and labels");
        let queries = std::array::from_fn(|qtype| {
            std::array::from_fn(|rcode| {
                child(
                    &queries_vec,
                    &[QueryType::ALL[qtype].label(), Rcode::ALL[rcode].label()],
                )
            })
        });
        register(&registry, &queries_vec);

        let query_duration = Histogram::with_opts(
            HistogramOpts::new(
                DNS_QUERY_DURATION_SECONDS,
                "Time spent handling one DNS query, in seconds.",
            )
            .buckets(QUERY_DURATION_BUCKETS.to_vec()),
        )
        .expect("valid metric name and increasing buckets");
        register(&registry, &query_duration);

        let answers = IntCounterVec::new(
            Opts::new(
                DNS_ANSWERS_TOTAL,
                "Routed answers, by service and first-ranked datacenter.",
            ),
            &["service", "datacenter"],
        )
        .expect("valid metric name and labels");
        register(&registry, &answers);

        let failed_open = IntCounterVec::new(
            Opts::new(
                ROUTING_FAILED_OPEN_TOTAL,
                "Routing decisions that failed open (every datacenter ineligible), by service.",
            ),
            &["service"],
        )
        .expect("valid metric name and labels");
        register(&registry, &failed_open);

        let report_age = GaugeVec::new(
            Opts::new(
                DATACENTER_REPORT_AGE_SECONDS,
                "Age of the datacenter's latest report, in seconds.",
            ),
            &["datacenter"],
        )
        .expect("valid metric name and labels");
        register(&registry, &report_age);

        let state = IntGaugeVec::new(
            Opts::new(
                DATACENTER_STATE,
                "Datacenter state: 1 for the current state, 0 for the others.",
            ),
            &["datacenter", "state"],
        )
        .expect("valid metric name and labels");
        register(&registry, &state);

        let utilization = GaugeVec::new(
            Opts::new(
                DATACENTER_UTILIZATION_RATIO,
                "Datacenter load divided by its capacity.",
            ),
            &["datacenter"],
        )
        .expect("valid metric name and labels");
        register(&registry, &utilization);

        let reloads = IntCounterVec::new(
            Opts::new(CONFIG_RELOADS_TOTAL, "Configuration reloads, by outcome."),
            &["outcome"],
        )
        .expect("valid metric name and labels");
        let reloads_ok = child(&reloads, &["ok"]);
        let reloads_failed = child(&reloads, &["failed"]);
        register(&registry, &reloads);

        let control_requests = IntCounterVec::new(
            Opts::new(
                CONTROL_REQUESTS_TOTAL,
                "Control-plane HTTP requests, by route template and status.",
            ),
            &["route", "status"],
        )
        .expect("valid metric name and labels");
        register(&registry, &control_requests);

        let generation = IntGauge::new(
            SNAPSHOT_GENERATION,
            "Generation of the snapshot serving queries.",
        )
        .expect("valid metric name");
        register(&registry, &generation);

        let lookups_vec = IntCounterVec::new(
            Opts::new(
                DIRECTORY_LOOKUPS_TOTAL,
                "User directory lookups, by placement source and serving reason.",
            ),
            &["source", "reason"],
        )
        .expect("valid metric name and labels");
        let lookups = std::array::from_fn(|source| {
            std::array::from_fn(|reason| {
                child(
                    &lookups_vec,
                    &[
                        ["bucket", "pin"][source],
                        ["home", "replica", "fallback"][reason],
                    ],
                )
            })
        });
        register(&registry, &lookups_vec);
        let failovers = IntCounter::new(
            DIRECTORY_FAILOVERS_TOTAL,
            "User directory lookups served from the replica because the home was ineligible.",
        )
        .expect("valid metric name");
        register(&registry, &failovers);
        let pins = IntGauge::new(DIRECTORY_PINS, "Users pinned in the directory.")
            .expect("valid metric name");
        register(&registry, &pins);

        Metrics {
            registry,
            queries,
            query_duration,
            answers,
            failed_open,
            report_age,
            state,
            utilization,
            reloads_ok,
            reloads_failed,
            control_requests,
            generation,
            lookups,
            failovers,
            pins,
            scrape: Mutex::new(()),
        }
    }

    /// Records one directory lookup. Lookup path: no lock.
    pub fn record_lookup(&self, source: LookupSource, reason: LookupReason) {
        self.lookups[source as usize][reason as usize].inc();
        if reason == LookupReason::Replica {
            self.failovers.inc();
        }
    }

    /// Sets the number of pinned users.
    pub fn set_pins(&self, pins: u64) {
        self.pins.set(i64::try_from(pins).unwrap_or(i64::MAX));
    }

    /// Records one answered query and how long it took to handle. Query path: no lock.
    ///
    /// A negative or non-finite duration, which a monotonic clock cannot produce, is recorded as
    /// zero: one NaN would otherwise poison the histogram's sum for the life of the process.
    pub fn record_query(&self, qtype: QueryType, rcode: Rcode, seconds: f64) {
        self.queries[qtype as usize][rcode as usize].inc();
        let seconds = if seconds.is_finite() && seconds > 0.0 {
            seconds
        } else {
            0.0
        };
        self.query_duration.observe(seconds);
    }

    /// Resolves the answer counter of every (service, datacenter) pair of a configuration.
    ///
    /// Call it when a validated configuration is loaded, off the query path: it locks the
    /// underlying vec once per pair, and creates each series (at zero) if it does not exist yet,
    /// so do not call it for a configuration that may still be rejected. Names already seen keep
    /// counting into the same series across reloads; a name listed twice shares one series.
    pub fn answer_counters(&self, services: &[&str], datacenters: &[&str]) -> AnswerCounters {
        let counters = services
            .iter()
            .flat_map(|service| {
                datacenters
                    .iter()
                    .map(move |datacenter| child(&self.answers, &[*service, *datacenter]))
            })
            .collect();
        AnswerCounters {
            counters,
            n_datacenters: datacenters.len(),
        }
    }

    /// Resolves the failed-open counter of every service of a configuration.
    ///
    /// Same rules as [`Metrics::answer_counters`]: off the query path, validated configurations
    /// only.
    pub fn failed_open_counters(&self, services: &[&str]) -> ServiceCounters {
        ServiceCounters {
            counters: services
                .iter()
                .map(|service| child(&self.failed_open, &[*service]))
                .collect(),
        }
    }

    /// Sets `datacenter`'s state: 1 on the `state` series, 0 on the four others.
    pub fn set_datacenter_state(&self, datacenter: &str, state: DcStateLabel) {
        let _scrape = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        for candidate in DcStateLabel::ALL {
            child(&self.state, &[datacenter, candidate.label()]).set(i64::from(candidate == state));
        }
    }

    /// Sets the age of `datacenter`'s latest report.
    pub fn set_report_age(&self, datacenter: &str, seconds: f64) {
        child(&self.report_age, &[datacenter]).set(seconds);
    }

    /// Sets `datacenter`'s utilization: its reported load divided by its capacity.
    pub fn set_utilization(&self, datacenter: &str, ratio: f64) {
        child(&self.utilization, &[datacenter]).set(ratio);
    }

    /// Removes every series labelled with `datacenter`: its gauges and its answer counters.
    ///
    /// For a datacenter removed from the configuration; call it after the snapshot without it is
    /// published (increments through an older [`AnswerCounters`] are then dropped, not exported).
    /// A later `set_*` call for the same name creates its series again, so the control plane
    /// should ignore reports for datacenters it no longer knows. Unknown names are a no-op.
    pub fn forget_datacenter(&self, datacenter: &str) {
        let _scrape = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        // Each removal fails only if that series was never created, which is fine to ignore.
        let _ = self.report_age.remove_label_values(&[datacenter]);
        let _ = self.utilization.remove_label_values(&[datacenter]);
        for state in DcStateLabel::ALL {
            let _ = self.state.remove_label_values(&[datacenter, state.label()]);
        }
        for service in label_values_where(&self.answers, "datacenter", datacenter, "service") {
            let _ = self
                .answers
                .remove_label_values(&[service.as_str(), datacenter]);
        }
    }

    /// Removes every series labelled with `service`: its answer and failed-open counters.
    ///
    /// For a service removed from the configuration; the same ordering rules as
    /// [`Metrics::forget_datacenter`] apply.
    pub fn forget_service(&self, service: &str) {
        let _scrape = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = self.failed_open.remove_label_values(&[service]);
        for datacenter in label_values_where(&self.answers, "service", service, "datacenter") {
            let _ = self
                .answers
                .remove_label_values(&[service, datacenter.as_str()]);
        }
    }

    /// Counts one configuration reload attempt, successful or not.
    pub fn record_reload(&self, ok: bool) {
        if ok {
            self.reloads_ok.inc();
        } else {
            self.reloads_failed.inc();
        }
    }

    /// Counts one control-plane HTTP request.
    ///
    /// `route` is the route template (`"/v1/datacenters/{dc}/report"`), never the request path,
    /// so the label set is bounded by the router's routes times the status codes it returns.
    pub fn record_http(&self, route: &'static str, status: u16) {
        let status = status.to_string();
        child(&self.control_requests, &[route, status.as_str()]).inc();
    }

    /// Sets the generation of the snapshot now serving queries.
    pub fn set_generation(&self, generation: u64) {
        // Prometheus gauges are signed; a generation past i64::MAX would take millennia of reloads.
        self.generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    /// Renders every metric in the Prometheus text exposition format (version 0.0.4), for
    /// `/metrics`.
    pub fn render(&self) -> String {
        let families = {
            let _scrape = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
            self.registry.gather()
        };
        TextEncoder::new()
            .encode_to_string(&families)
            .expect("gather drops empty families and writing to a String cannot fail")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The child of `vec` for `labels`, created if needed. Takes the vec's lock: never per query.
fn child<T: MetricVecBuilder>(vec: &MetricVec<T>, labels: &[&str]) -> T::M {
    vec.get_metric_with_label_values(labels)
        .expect("label count matches the vec's declaration")
}

/// Registers `collector` in `registry`.
fn register<C: Collector + Clone + 'static>(registry: &Registry, collector: &C) {
    registry
        .register(Box::new(collector.clone()))
        .expect("metric names are unique within a Metrics");
}

/// The values of label `wanted` over the series of `vec` whose label `key` equals `value`.
fn label_values_where<T: MetricVecBuilder>(
    vec: &MetricVec<T>,
    key: &str,
    value: &str,
    wanted: &str,
) -> Vec<String> {
    let mut res = Vec::new();
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels = metric.get_label();
            let matches = labels
                .iter()
                .any(|pair| pair.name() == key && pair.value() == value);
            if !matches {
                continue;
            }
            res.extend(
                labels
                    .iter()
                    .filter(|pair| pair.name() == wanted)
                    .map(|pair| pair.value().to_owned()),
            );
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// One parsed sample line: metric name, labels, value.
    type Sample = (String, BTreeMap<String, String>, f64);

    /// Parses the text exposition format (as written by prometheus' `TextEncoder`) into samples.
    fn parse(text: &str) -> Vec<Sample> {
        text.lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("sample has a value");
                let value: f64 = value.parse().expect("sample value is a number");
                let Some((name, labels)) = series.split_once('{') else {
                    return (series.to_owned(), BTreeMap::new(), value);
                };
                let labels = labels.strip_suffix('}').expect("labels close with }");
                (name.to_owned(), parse_labels(labels), value)
            })
            .collect()
    }

    /// Parses `a="x",b="y"`; values in our tests hold no escaped characters, checked here.
    fn parse_labels(labels: &str) -> BTreeMap<String, String> {
        assert!(!labels.contains('\\'), "escapes not handled: {labels}");
        let mut res = BTreeMap::new();
        let mut rest = labels;
        while !rest.is_empty() {
            let (key, after) = rest.split_once("=\"").expect("label has a value");
            let (value, after) = after.split_once('"').expect("label value is closed");
            res.insert(key.to_owned(), value.to_owned());
            rest = after.strip_prefix(',').unwrap_or(after);
        }
        res
    }

    /// The value of the one sample named `name` with exactly `labels`, if there is one.
    fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        let found: Vec<f64> = parse(text)
            .into_iter()
            .filter(|(sample_name, sample_labels, _)| {
                sample_name == name && *sample_labels == wanted
            })
            .map(|(_, _, value)| value)
            .collect();
        assert!(found.len() <= 1, "{name} {labels:?} exported twice");
        found.first().copied()
    }

    /// The number of samples named `name`.
    fn count(text: &str, name: &str) -> usize {
        parse(text)
            .into_iter()
            .filter(|(sample_name, _, _)| sample_name == name)
            .count()
    }

    #[test]
    fn query_type_codes() {
        let table = [
            (1, QueryType::A, "A"),
            (2, QueryType::Ns, "NS"),
            (5, QueryType::Cname, "CNAME"),
            (6, QueryType::Soa, "SOA"),
            (12, QueryType::Ptr, "PTR"),
            (15, QueryType::Mx, "MX"),
            (16, QueryType::Txt, "TXT"),
            (28, QueryType::Aaaa, "AAAA"),
            (33, QueryType::Srv, "SRV"),
            (255, QueryType::Any, "ANY"),
            (257, QueryType::Caa, "CAA"),
            // Unknown, obsolete (MD=3) and meta types (AXFR=252, OPT=41) are all OTHER.
            (0, QueryType::Other, "OTHER"),
            (3, QueryType::Other, "OTHER"),
            (41, QueryType::Other, "OTHER"),
            (65, QueryType::Other, "OTHER"),
            (252, QueryType::Other, "OTHER"),
            (u16::MAX, QueryType::Other, "OTHER"),
        ];
        for (code, qtype, label) in table {
            assert_eq!(QueryType::from_code(code), qtype, "code {code}");
            assert_eq!(qtype.label(), label, "code {code}");
        }
    }

    #[test]
    fn rcode_codes() {
        let table = [
            (0, Rcode::NoError, "NOERROR"),
            (1, Rcode::FormErr, "FORMERR"),
            (2, Rcode::ServFail, "SERVFAIL"),
            (3, Rcode::NxDomain, "NXDOMAIN"),
            (4, Rcode::NotImp, "NOTIMP"),
            (5, Rcode::Refused, "REFUSED"),
            (16, Rcode::BadVers, "BADVERS"),
            (6, Rcode::Other, "OTHER"),
            (9, Rcode::Other, "OTHER"),
            (15, Rcode::Other, "OTHER"),
            (17, Rcode::Other, "OTHER"),
            (u16::MAX, Rcode::Other, "OTHER"),
        ];
        for (code, rcode, label) in table {
            assert_eq!(Rcode::from_code(code), rcode, "code {code}");
            assert_eq!(rcode.label(), label, "code {code}");
        }
    }

    #[test]
    fn label_arrays_match_discriminants() {
        // The query path indexes `queries` with `as usize`: ALL must list variants in order.
        for (index, qtype) in QueryType::ALL.into_iter().enumerate() {
            assert_eq!(qtype as usize, index);
        }
        for (index, rcode) in Rcode::ALL.into_iter().enumerate() {
            assert_eq!(rcode as usize, index);
        }
    }

    #[test]
    fn render_reports_recorded_values() {
        let metrics = Metrics::new();
        metrics.record_query(QueryType::A, Rcode::NoError, 0.000_02);
        metrics.record_query(QueryType::A, Rcode::NoError, 0.000_08);
        metrics.record_query(QueryType::from_code(28), Rcode::from_code(3), 0.003);
        metrics.record_query(QueryType::from_code(99), Rcode::from_code(9), 0.5);

        let answers = metrics.answer_counters(&["www", "api"], &["ams", "nyc", "sfo"]);
        answers.inc(0, 0);
        answers.inc(0, 0);
        answers.inc(1, 2);
        let failed_open = metrics.failed_open_counters(&["www", "api"]);
        failed_open.inc(1);

        metrics.record_reload(true);
        metrics.record_reload(false);
        metrics.record_reload(false);
        metrics.record_http("/v1/datacenters/{dc}/report", 204);
        metrics.record_http("/v1/datacenters/{dc}/report", 204);
        metrics.record_http("/v1/reload", 500);

        metrics.set_datacenter_state("ams", DcStateLabel::Stale);
        metrics.set_datacenter_state("ams", DcStateLabel::Fresh);
        metrics.set_report_age("ams", 2.5);
        metrics.set_utilization("ams", 0.75);
        metrics.set_generation(7);

        let text = metrics.render();
        let get = |name: &str, labels: &[(&str, &str)]| value(&text, name, labels);

        let query = |qtype: &str, rcode: &str| {
            get(DNS_QUERIES_TOTAL, &[("qtype", qtype), ("rcode", rcode)])
        };
        assert_eq!(query("A", "NOERROR"), Some(2.0));
        assert_eq!(query("AAAA", "NXDOMAIN"), Some(1.0));
        assert_eq!(query("OTHER", "OTHER"), Some(1.0));
        // Every combination is exported from the start, at zero.
        assert_eq!(query("MX", "REFUSED"), Some(0.0));
        assert_eq!(count(&text, DNS_QUERIES_TOTAL), 12 * 8);

        let duration = DNS_QUERY_DURATION_SECONDS;
        let bucket = |le: &str| get(&format!("{duration}_bucket"), &[("le", le)]);
        assert_eq!(bucket("0.00001"), Some(0.0));
        assert_eq!(bucket("0.000025"), Some(1.0));
        assert_eq!(bucket("0.0001"), Some(2.0));
        assert_eq!(bucket("0.005"), Some(3.0));
        assert_eq!(bucket("0.1"), Some(3.0));
        assert_eq!(bucket("+Inf"), Some(4.0));
        assert_eq!(get(&format!("{duration}_count"), &[]), Some(4.0));
        let sum = get(&format!("{duration}_sum"), &[]).expect("sum exported");
        assert!((sum - 0.503_1).abs() < 1e-9, "sum {sum}");

        let answer = |service: &str, datacenter: &str| {
            get(
                DNS_ANSWERS_TOTAL,
                &[("service", service), ("datacenter", datacenter)],
            )
        };
        assert_eq!(answer("www", "ams"), Some(2.0));
        assert_eq!(answer("api", "sfo"), Some(1.0));
        assert_eq!(answer("www", "nyc"), Some(0.0));
        assert_eq!(count(&text, DNS_ANSWERS_TOTAL), 2 * 3);
        assert_eq!(
            get(ROUTING_FAILED_OPEN_TOTAL, &[("service", "api")]),
            Some(1.0)
        );
        assert_eq!(
            get(ROUTING_FAILED_OPEN_TOTAL, &[("service", "www")]),
            Some(0.0)
        );

        assert_eq!(get(CONFIG_RELOADS_TOTAL, &[("outcome", "ok")]), Some(1.0));
        assert_eq!(
            get(CONFIG_RELOADS_TOTAL, &[("outcome", "failed")]),
            Some(2.0)
        );
        let route = "/v1/datacenters/{dc}/report";
        assert_eq!(
            get(
                CONTROL_REQUESTS_TOTAL,
                &[("route", route), ("status", "204")]
            ),
            Some(2.0)
        );
        assert_eq!(
            get(
                CONTROL_REQUESTS_TOTAL,
                &[("route", "/v1/reload"), ("status", "500")]
            ),
            Some(1.0)
        );

        let state = |state: &str| get(DATACENTER_STATE, &[("datacenter", "ams"), ("state", state)]);
        assert_eq!(state("fresh"), Some(1.0));
        for other in ["stale", "down", "unreported", "drained"] {
            assert_eq!(state(other), Some(0.0), "state {other}");
        }
        assert_eq!(
            get(DATACENTER_REPORT_AGE_SECONDS, &[("datacenter", "ams")]),
            Some(2.5)
        );
        assert_eq!(
            get(DATACENTER_UTILIZATION_RATIO, &[("datacenter", "ams")]),
            Some(0.75)
        );
        assert_eq!(get(SNAPSHOT_GENERATION, &[]), Some(7.0));
    }

    #[test]
    fn render_declares_types() {
        let text = Metrics::new().render();
        assert!(text.contains(&format!("# TYPE {DNS_QUERIES_TOTAL} counter\n")));
        assert!(text.contains(&format!("# TYPE {DNS_QUERY_DURATION_SECONDS} histogram\n")));
        assert!(text.contains(&format!("# TYPE {SNAPSHOT_GENERATION} gauge\n")));
    }

    #[test]
    fn bad_durations_do_not_poison_the_sum() {
        let metrics = Metrics::new();
        metrics.record_query(QueryType::A, Rcode::NoError, f64::NAN);
        metrics.record_query(QueryType::A, Rcode::NoError, f64::INFINITY);
        metrics.record_query(QueryType::A, Rcode::NoError, -1.0);
        metrics.record_query(QueryType::A, Rcode::NoError, 0.001);
        let text = metrics.render();
        let duration = DNS_QUERY_DURATION_SECONDS;
        assert_eq!(value(&text, &format!("{duration}_count"), &[]), Some(4.0));
        assert_eq!(value(&text, &format!("{duration}_sum"), &[]), Some(0.001));
        assert_eq!(
            value(&text, &format!("{duration}_bucket"), &[("le", "0.00001")]),
            Some(3.0)
        );
    }

    #[test]
    fn out_of_range_indexes_count_nothing() {
        let metrics = Metrics::new();
        let answers = metrics.answer_counters(&["www", "api"], &["ams", "nyc"]);
        answers.inc(2, 0);
        answers.inc(0, 2);
        // (0, 2) must not wrap into row 1: that would be (1, 0).
        answers.inc(0, 3);
        answers.inc(usize::MAX, usize::MAX);
        answers.inc(usize::MAX, 1);
        let failed_open = metrics.failed_open_counters(&["www"]);
        failed_open.inc(1);
        failed_open.inc(usize::MAX);
        AnswerCounters::default().inc(0, 0);
        ServiceCounters::default().inc(0);

        let text = metrics.render();
        let total: f64 = parse(&text)
            .into_iter()
            .filter(|(name, _, _)| name == DNS_ANSWERS_TOTAL || name == ROUTING_FAILED_OPEN_TOTAL)
            .map(|(_, _, value)| value)
            .sum();
        assert_eq!(total, 0.0);
        assert_eq!(count(&text, DNS_ANSWERS_TOTAL), 4);
    }

    #[test]
    fn counters_survive_reloads() {
        let metrics = Metrics::new();
        let before = metrics.answer_counters(&["www", "api"], &["ams", "nyc"]);
        let failed_before = metrics.failed_open_counters(&["www", "api"]);
        before.inc(0, 1); // www, nyc
        before.inc(1, 0); // api, ams
        failed_before.inc(1); // api

        // The reloaded configuration reorders both lists and adds names.
        let after = metrics.answer_counters(&["api", "new", "www"], &["nyc", "sfo", "ams"]);
        let failed_after = metrics.failed_open_counters(&["new", "api", "www"]);
        after.inc(2, 0); // www, nyc
        after.inc(0, 2); // api, ams
        after.inc(1, 1); // new, sfo
        failed_after.inc(1); // api
        // A query still holding the old snapshot counts into the same series.
        before.inc(0, 1); // www, nyc

        let text = metrics.render();
        let answer = |service: &str, datacenter: &str| {
            value(
                &text,
                DNS_ANSWERS_TOTAL,
                &[("service", service), ("datacenter", datacenter)],
            )
        };
        assert_eq!(answer("www", "nyc"), Some(3.0));
        assert_eq!(answer("api", "ams"), Some(2.0));
        assert_eq!(answer("new", "sfo"), Some(1.0));
        assert_eq!(answer("www", "sfo"), Some(0.0));
        assert_eq!(count(&text, DNS_ANSWERS_TOTAL), 3 * 3);
        assert_eq!(
            value(&text, ROUTING_FAILED_OPEN_TOTAL, &[("service", "api")]),
            Some(2.0)
        );
    }

    #[test]
    fn forget_datacenter_removes_its_series() {
        let metrics = Metrics::new();
        let answers = metrics.answer_counters(&["www", "api"], &["ams", "nyc"]);
        answers.inc(0, 0);
        answers.inc(1, 1);
        for datacenter in ["ams", "nyc"] {
            metrics.set_datacenter_state(datacenter, DcStateLabel::Down);
            metrics.set_report_age(datacenter, 30.0);
            metrics.set_utilization(datacenter, 0.5);
        }

        metrics.forget_datacenter("ams");
        metrics.forget_datacenter("never-configured");

        let text = metrics.render();
        let labelled_ams = parse(&text)
            .into_iter()
            .filter(|(_, labels, _)| labels.get("datacenter").is_some_and(|dc| dc == "ams"))
            .count();
        assert_eq!(labelled_ams, 0, "{text}");
        assert!(!text.contains("\"ams\""), "{text}");
        // The other datacenter is untouched.
        assert_eq!(count(&text, DATACENTER_STATE), 5);
        assert_eq!(
            value(
                &text,
                DATACENTER_STATE,
                &[("datacenter", "nyc"), ("state", "down")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                DATACENTER_REPORT_AGE_SECONDS,
                &[("datacenter", "nyc")]
            ),
            Some(30.0)
        );
        assert_eq!(
            value(
                &text,
                DNS_ANSWERS_TOTAL,
                &[("service", "api"), ("datacenter", "nyc")]
            ),
            Some(1.0)
        );
        assert_eq!(count(&text, DNS_ANSWERS_TOTAL), 2);
    }

    #[test]
    fn forget_service_removes_its_series() {
        let metrics = Metrics::new();
        let answers = metrics.answer_counters(&["www", "api"], &["ams", "nyc"]);
        let failed_open = metrics.failed_open_counters(&["www", "api"]);
        answers.inc(1, 1);
        failed_open.inc(1);

        metrics.forget_service("www");

        let text = metrics.render();
        assert!(!text.contains("\"www\""), "{text}");
        assert_eq!(count(&text, DNS_ANSWERS_TOTAL), 2);
        assert_eq!(
            value(&text, ROUTING_FAILED_OPEN_TOTAL, &[("service", "api")]),
            Some(1.0)
        );
    }

    #[test]
    fn hot_path_labels_stay_bounded() {
        // The hot methods take enums and indexes, never a string: these coercions only compile
        // while that stays true.
        let _: fn(&Metrics, QueryType, Rcode, f64) = Metrics::record_query;
        let _: fn(&AnswerCounters, usize, usize) = AnswerCounters::inc;
        let _: fn(&ServiceCounters, usize) = ServiceCounters::inc;

        // Whatever codes clients send, the query series stay the same 12 x 8.
        let metrics = Metrics::new();
        for code in 0..=u16::MAX {
            metrics.record_query(QueryType::from_code(code), Rcode::from_code(code), 0.0);
        }
        let text = metrics.render();
        assert_eq!(count(&text, DNS_QUERIES_TOTAL), 12 * 8);
        let total: f64 = parse(&text)
            .into_iter()
            .filter(|(name, _, _)| name == DNS_QUERIES_TOTAL)
            .map(|(_, _, value)| value)
            .sum();
        assert_eq!(total, 65_536.0);
        // 11 codes are known qtypes and 7 known rcodes; 1, 2, 5 and 16 are both, so 14 codes
        // land anywhere but OTHER/OTHER.
        assert_eq!(
            value(
                &text,
                DNS_QUERIES_TOTAL,
                &[("qtype", "OTHER"), ("rcode", "OTHER")]
            ),
            Some(65_536.0 - 14.0)
        );
    }

    #[test]
    fn concurrent_recording_is_exact() {
        let metrics = Metrics::new();
        let answers = metrics.answer_counters(&["www"], &["ams"]);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..10_000 {
                        metrics.record_query(QueryType::Aaaa, Rcode::NoError, 0.000_01);
                        answers.inc(0, 0);
                    }
                });
            }
        });
        let text = metrics.render();
        assert_eq!(
            value(
                &text,
                DNS_QUERIES_TOTAL,
                &[("qtype", "AAAA"), ("rcode", "NOERROR")]
            ),
            Some(40_000.0)
        );
        assert_eq!(
            value(
                &text,
                DNS_ANSWERS_TOTAL,
                &[("service", "www"), ("datacenter", "ams")]
            ),
            Some(40_000.0)
        );
    }

    #[test]
    fn metrics_are_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Metrics>();
        assert_send_sync::<AnswerCounters>();
        assert_send_sync::<ServiceCounters>();
    }

    #[test]
    fn names_follow_conventions() {
        let counters = [
            DNS_QUERIES_TOTAL,
            DNS_ANSWERS_TOTAL,
            ROUTING_FAILED_OPEN_TOTAL,
            CONFIG_RELOADS_TOTAL,
            CONTROL_REQUESTS_TOTAL,
        ];
        let others = [
            DNS_QUERY_DURATION_SECONDS,
            DATACENTER_REPORT_AGE_SECONDS,
            DATACENTER_STATE,
            DATACENTER_UTILIZATION_RATIO,
            SNAPSHOT_GENERATION,
        ];
        for name in counters.iter().chain(&others) {
            assert!(name.starts_with("meridian_"), "{name}");
        }
        for name in counters {
            assert!(name.ends_with("_total"), "{name}");
        }
    }
}
