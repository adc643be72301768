//! Prometheus metrics: one [`Metrics`] value owns a private `Registry` and typed handles into it.
//!
//! The DNS query path (several worker threads, hundreds of thousands of queries a second) counts
//! into per-thread shards (`shards.rs`): cells that only the counting thread writes, so that no
//! cache line is written by two cores per query; a scrape ([`Metrics::render`]) sums the shards
//! into the registered series. Nothing on the query path looks up a label set or takes a lock:
//! every label combination it can use is an index, fixed ([`QueryType`] x [`Rcode`], the
//! duration buckets, [`DnsEvent`], directory lookups) or given out when a configuration is
//! loaded ([`Metrics::answer_counters`], [`Metrics::failed_open_counters`],
//! [`Metrics::banned_counter`]: a slot number in every shard). Every label is bounded: enums, or
//! names taken from the configuration; never a client address or a qname.
//!
//! This module deliberately knows nothing about hickory, HTTP or the routing types: the `dns` and
//! `control` modules convert at their boundary (rcode and qtype as numbers, datacenters and
//! services as indexes into the configuration's lists).
//!
//! - `names.rs`: every metric name, as a `const`, and the histogram buckets;
//! - `labels.rs`: the bounded label vocabularies ([`QueryType`], [`Rcode`],
//!   [`LookupSource`], [`LookupReason`]);
//! - `counters.rs`: per-configuration handles ([`AnswerCounters`], [`ServiceCounters`],
//!   [`Counter`]);
//! - `shards.rs`: the per-thread shards the query path counts into, summed at scrape time;
//! - this file: [`Metrics`], the registry and the methods that record and render.

mod counters;
mod errors;
mod labels;
mod names;
mod samples;
mod shards;
mod state;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::PoisonError;
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc, MetricVec, MetricVecBuilder};
use prometheus::process_collector::ProcessCollector;
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{
    GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use counters::{AnswerCounters, Counter, ServiceCounters};
pub use errors::{ERROR_RING_SIZE, ErrorKind, InternalError, panic_message};
pub use labels::{DnsEvent, LookupReason, LookupSource, QueryType, Rcode};

use crate::routing::DcStatus;
use counters::Slotted;
pub use names::*;
pub use samples::{SampleDrops, Sampler};
use shards::{MAX_SLOTS, N_BUCKETS, Shards};
pub use state::StateGauges;

/// This build's version, from the manifest.
pub const BUILD_VERSION: &str = env!("CARGO_PKG_VERSION");
/// This build's git commit (set by `build.rs`), or `unknown`.
pub const BUILD_COMMIT: &str = match option_env!("MERIDIAN_GIT_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

/// All of meridian's metrics: a private registry plus typed handles into it.
///
/// `Send + Sync`; the application shares one in an `Arc`. Each value has its own registry (not
/// prometheus' global one), so tests can create as many as they like.
pub struct Metrics {
    /// The registry every metric below is registered in; [`Metrics::render`] gathers it.
    registry: Registry,
    /// Where the query path counts: one shard per counting thread, summed by [`Metrics::render`]
    /// into the series below. An `Arc` because handles resolved for a configuration
    /// ([`AnswerCounters`] and the like) and the duration collector count into it too.
    shards: Arc<Shards>,
    /// The series of configured handles (answers, failed-open, banned rules) by slot, for
    /// scrapes and to give out slots. A `Mutex`: control-plane work only.
    slots: Mutex<SlotTable>,
    /// Query counters indexed `[QueryType as usize][Rcode as usize]`: the exported series, set
    /// from the shards' sums at each scrape.
    queries: [[IntCounter; Rcode::ALL.len()]; QueryType::ALL.len()],
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
    /// See [`SLOW_START_SHARE`].
    slow_start: GaugeVec,
    /// `outcome="ok"`, resolved at construction.
    reloads_ok: IntCounter,
    /// `outcome="failed"`, resolved at construction.
    reloads_failed: IntCounter,
    /// See [`CONFIG_BUILDS_TOTAL`].
    builds: IntCounter,
    /// Control-plane requests; resolved per request, which is fine off the query path.
    control_requests: IntCounterVec,
    /// See [`SNAPSHOT_GENERATION`].
    generation: IntGauge,
    /// Directory lookups indexed `[LookupSource as usize][LookupReason as usize]`: exported
    /// series, set from the shards at each scrape (lookups are hot).
    lookups: [[IntCounter; 3]; 2],
    /// See [`DIRECTORY_FAILOVERS_TOTAL`].
    failovers: IntCounter,
    /// See [`DIRECTORY_PINS`].
    pins: IntGauge,
    /// See [`STORE_WRITABLE`].
    store_writable: IntGauge,
    /// See [`STORE_WRITE_FAILURES_TOTAL`].
    store_failures: IntCounter,
    /// See [`ACCEPT_ERRORS_TOTAL`]; resolved per error, which is rare.
    accept_errors: IntCounterVec,
    /// See [`INTERNAL_ERRORS_TOTAL`]; resolved per error, which is rare.
    internal_errors: IntCounterVec,
    /// The most recent internal errors, for `GET /v1/errors`.
    errors: errors::ErrorRing,
    /// See [`CONTROL_CONNECTIONS`].
    control_connections: IntGauge,
    /// See [`TOGGLE_ENABLED`]; set when the toggles are published.
    toggles: IntGaugeVec,
    /// See [`DNS_BANNED_TOTAL`]; each rule's handle is resolved when the rules are published.
    banned: IntCounterVec,
    /// DNS transport events, indexed by [`DnsEvent`]: exported series, set from the shards at
    /// each scrape.
    dns_events: [IntCounter; DnsEvent::ALL.len()],
    /// Serializes [`Metrics::render`] with the multi-series updates (`set_datacenter_state`,
    /// `forget_datacenter`, `forget_service`), so a scrape never sees a datacenter in two states
    /// or in none. A `Mutex` because both sides are control-plane work and the sections are
    /// short; the query path never takes it.
    scrape: Mutex<()>,
    /// The state backend's gauges (revision, reachability, read-only).
    backend: StateGauges,
    /// See [`SAMPLES_DROPPED_TOTAL`].
    samples: SampleDrops,
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

        let shards = Shards::new();
        registry
            .register(Box::new(DurationCollector::new(Arc::clone(&shards))))
            .expect("metric names are unique within a Metrics");

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

        let slow_start = GaugeVec::new(
            Opts::new(
                SLOW_START_SHARE,
                "Share of its clients a datacenter in slow start serves for a service (1 when not ramping).",
            ),
            &["datacenter", "service"],
        )
        .expect("valid metric name and labels");
        register(&registry, &slow_start);

        let reloads = IntCounterVec::new(
            Opts::new(CONFIG_RELOADS_TOTAL, "Configuration reloads, by outcome."),
            &["outcome"],
        )
        .expect("valid metric name and labels");
        let reloads_ok = child(&reloads, &["ok"]);
        let reloads_failed = child(&reloads, &["failed"]);
        register(&registry, &reloads);
        let builds = IntCounter::new(
            CONFIG_BUILDS_TOTAL,
            "Snapshots built from files by reloads (unchanged files build none).",
        )
        .expect("valid metric name");
        register(&registry, &builds);

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
        let store_writable = IntGauge::new(
            STORE_WRITABLE,
            "1 while the state store accepts writes, 0 while the control plane is read-only.",
        )
        .expect("valid metric name");
        register(&registry, &store_writable);
        let store_failures = IntCounter::new(
            STORE_WRITE_FAILURES_TOTAL,
            "State store writes and recovery probes that failed.",
        )
        .expect("valid metric name");
        register(&registry, &store_failures);
        let accept_errors = IntCounterVec::new(
            Opts::new(ACCEPT_ERRORS_TOTAL, "Failed accept calls, by listener."),
            &["listener"],
        )
        .expect("valid metric name and labels");
        register(&registry, &accept_errors);
        let internal_errors = IntCounterVec::new(
            Opts::new(INTERNAL_ERRORS_TOTAL, "Internal errors caught, by kind."),
            &["kind"],
        )
        .expect("valid metric name and labels");
        register(&registry, &internal_errors);
        let control_connections =
            IntGauge::new(CONTROL_CONNECTIONS, "Open control-plane HTTP connections.")
                .expect("valid metric name");
        register(&registry, &control_connections);
        let toggles = IntGaugeVec::new(
            Opts::new(
                TOGGLE_ENABLED,
                "1 while a feature toggle is on, 0 while an operator has switched it off.",
            ),
            &["toggle"],
        )
        .expect("valid metric name and labels");
        register(&registry, &toggles);
        let banned = IntCounterVec::new(
            Opts::new(
                DNS_BANNED_TOTAL,
                "Queries a banned-query rule dropped or refused, by rule id.",
            ),
            &["rule"],
        )
        .expect("valid metric name and labels");
        register(&registry, &banned);

        let build_info = IntGaugeVec::new(
            Opts::new(
                BUILD_INFO,
                "Always 1, labelled with the running build's version and git commit.",
            ),
            &["version", "commit"],
        )
        .expect("valid metric name and labels");
        child(&build_info, &[BUILD_VERSION, BUILD_COMMIT]).set(1);
        register(&registry, &build_info);

        // The standard `process_*` metrics (CPU, memory, open files, start time) of this
        // process, read from /proc at scrape time; on other systems the collector exports
        // nothing.
        registry
            .register(Box::new(ProcessCollector::for_self()))
            .expect("process metric names are unique within a Metrics");

        let dns_events = dns_event_counters(&registry);

        let backend = StateGauges::register(&registry);
        let samples = SampleDrops::register(&registry);
        Metrics {
            registry,
            shards,
            slots: Mutex::new(SlotTable::default()),
            dns_events,
            queries,
            answers,
            failed_open,
            report_age,
            state,
            utilization,
            slow_start,
            reloads_ok,
            reloads_failed,
            builds,
            control_requests,
            generation,
            lookups,
            failovers,
            pins,
            store_writable,
            store_failures,
            accept_errors,
            internal_errors,
            errors: errors::ErrorRing::default(),
            control_connections,
            toggles,
            banned,
            scrape: Mutex::new(()),
            backend,
            samples,
        }
    }

    /// The state backend's gauges.
    pub fn state(&self) -> &StateGauges {
        &self.backend
    }

    /// The counts of dropped samples.
    pub fn samples(&self) -> &SampleDrops {
        &self.samples
    }

    /// Sets whether the feature toggle `name` is on.
    pub fn set_toggle(&self, name: &str, on: bool) {
        self.toggles.with_label_values(&[name]).set(i64::from(on));
    }

    /// The counter of queries banned by rule `id`, resolved once per published rule set so
    /// that the query path only increments it.
    pub fn banned_counter(&self, id: &str) -> Counter {
        let (slot, base) = self.slot(&self.banned, DNS_BANNED_TOTAL, &[id]);
        Counter(Some(Slotted {
            shards: Arc::clone(&self.shards),
            slot,
            base,
        }))
    }

    /// Stops exporting the count of rule `id`, once the rule is removed.
    pub fn forget_banned(&self, id: &str) {
        let _scrape = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = self.banned.remove_label_values(&[id]);
        self.free_slot(DNS_BANNED_TOTAL, &[id]);
    }

    /// Sets whether the state store accepts writes.
    pub fn set_store_writable(&self, writable: bool) {
        self.store_writable.set(i64::from(writable));
    }

    /// Counts one failed state store write or probe.
    pub fn record_store_failure(&self) {
        self.store_failures.inc();
    }

    /// Counts one failed `accept` on `listener` (`http`, `dns`).
    pub fn record_accept_error(&self, listener: &'static str) {
        self.accept_errors.with_label_values(&[listener]).inc();
    }

    /// Counts one internal error of `kind` (`panic`).
    fn record_internal_error(&self, kind: &'static str) {
        self.internal_errors.with_label_values(&[kind]).inc();
    }

    /// Counts `error` by kind and keeps it in the ring of recent errors. The caller logs it.
    pub fn keep_error(&self, error: InternalError) {
        self.record_internal_error(error.kind.label());
        self.errors.push(error);
    }

    /// The most recent internal errors, oldest first.
    pub fn recent_errors(&self) -> Vec<InternalError> {
        self.errors.list()
    }

    /// Adds `delta` (1 or -1) to the open control-plane connections.
    pub fn add_control_connections(&self, delta: i64) {
        self.control_connections.add(delta);
    }

    /// Counts one DNS transport event. Query path: no lock.
    pub fn record_dns_event(&self, event: DnsEvent) {
        self.shards
            .with(|shard| shard.events[event as usize].add(1));
    }

    /// Records one directory lookup. Lookup path: no lock.
    pub fn record_lookup(&self, source: LookupSource, reason: LookupReason) {
        self.shards.with(|shard| {
            shard.lookups[source as usize][reason as usize].add(1);
            if reason == LookupReason::Replica {
                shard.failovers.add(1);
            }
        });
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
        let seconds = if seconds.is_finite() && seconds > 0.0 {
            seconds
        } else {
            0.0
        };
        self.shards.with(|shard| shard.query(qtype, rcode, seconds));
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
                datacenters.iter().map(move |datacenter| {
                    self.slot(&self.answers, DNS_ANSWERS_TOTAL, &[service, datacenter])
                        .0
                })
            })
            .collect();
        AnswerCounters {
            counters,
            shards: Some(Arc::clone(&self.shards)),
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
                .map(|service| {
                    self.slot(&self.failed_open, ROUTING_FAILED_OPEN_TOTAL, &[service])
                        .0
                })
                .collect(),
            shards: Some(Arc::clone(&self.shards)),
        }
    }

    /// Sets `datacenter`'s state: 1 on the `state` series, 0 on the four others.
    pub fn set_datacenter_state(&self, datacenter: &str, state: DcStatus) {
        let _scrape = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        for candidate in DcStatus::ALL {
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

    /// Sets the share of its clients `datacenter` serves for `service` in its slow start.
    pub fn set_slow_start(&self, datacenter: &str, service: &str, share: f64) {
        child(&self.slow_start, &[datacenter, service]).set(share);
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
        for service in label_values_where(&self.slow_start, "datacenter", datacenter, "service") {
            let _ = self.slow_start.remove_label_values(&[datacenter, &service]);
        }
        for state in DcStatus::ALL {
            let _ = self.state.remove_label_values(&[datacenter, state.label()]);
        }
        for service in label_values_where(&self.answers, "datacenter", datacenter, "service") {
            let _ = self
                .answers
                .remove_label_values(&[service.as_str(), datacenter]);
            self.free_slot(DNS_ANSWERS_TOTAL, &[service.as_str(), datacenter]);
        }
    }

    /// Removes every series labelled with `service`: its answer and failed-open counters.
    ///
    /// For a service removed from the configuration; the same ordering rules as
    /// [`Metrics::forget_datacenter`] apply.
    pub fn forget_service(&self, service: &str) {
        let _scrape = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = self.failed_open.remove_label_values(&[service]);
        self.free_slot(ROUTING_FAILED_OPEN_TOTAL, &[service]);
        for datacenter in label_values_where(&self.answers, "service", service, "datacenter") {
            let _ = self
                .answers
                .remove_label_values(&[service, datacenter.as_str()]);
            self.free_slot(DNS_ANSWERS_TOTAL, &[service, datacenter.as_str()]);
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

    /// Counts one snapshot built from files by a reload.
    pub fn record_config_build(&self) {
        self.builds.inc();
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
            self.fold();
            self.registry.gather()
        };
        TextEncoder::new()
            .encode_to_string(&families)
            .expect("gather drops empty families and writing to a String cannot fail")
    }
}

impl Metrics {
    /// Sets every exported counter that the query path counts in shards to the shards' sum.
    /// Called by [`Metrics::render`] with the scrape lock held, so the exported counters have
    /// one writer and only ever grow.
    fn fold(&self) {
        let mut queries = [[0u64; Rcode::ALL.len()]; QueryType::ALL.len()];
        let mut events = [0u64; DnsEvent::ALL.len()];
        let mut lookups = [[0u64; 3]; 2];
        let mut failovers = 0u64;
        self.shards.for_each(|shard| {
            add_cells(queries.as_flattened_mut(), shard.queries.as_flattened());
            add_cells(&mut events, &shard.events);
            add_cells(lookups.as_flattened_mut(), shard.lookups.as_flattened());
            failovers = failovers.wrapping_add(shard.failovers.get());
        });
        for (counter, sum) in self
            .queries
            .as_flattened()
            .iter()
            .zip(queries.as_flattened())
        {
            catch_up(counter, *sum);
        }
        for (counter, sum) in self.dns_events.iter().zip(events) {
            catch_up(counter, sum);
        }
        for (counter, sum) in self
            .lookups
            .as_flattened()
            .iter()
            .zip(lookups.as_flattened())
        {
            catch_up(counter, *sum);
        }
        catch_up(&self.failovers, failovers);
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        for (slot, series) in slots.series.iter().enumerate() {
            if let Some(series) = series {
                let sum = self.shards.sum_slot(slot as u32);
                catch_up(&series.counter, sum.wrapping_sub(series.base));
            }
        }
    }

    /// The slot of the series `labels` of `vec` (named `name`), with the sum its count starts
    /// from; given out (and the series created at zero) if it has none yet.
    fn slot(&self, vec: &IntCounterVec, name: &'static str, labels: &[&str]) -> (u32, u64) {
        let key = (
            name,
            labels.iter().map(|label| (*label).to_owned()).collect(),
        );
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(&slot) = slots.by_series.get(&key) {
            let base = slots.series[slot as usize]
                .as_ref()
                .map_or(0, |series| series.base);
            return (slot, base);
        }
        let slot = match slots.free.pop() {
            Some(slot) => slot,
            None if slots.series.len() < MAX_SLOTS as usize => {
                slots.series.push(None);
                (slots.series.len() - 1) as u32
            }
            // Out of slots: the series is exported, at zero; its handle counts nothing.
            None => {
                child(vec, labels);
                return (u32::MAX, 0);
            }
        };
        // A slot given out before keeps its old counts in the shards: this series starts there.
        let base = self.shards.sum_slot(slot);
        slots.series[slot as usize] = Some(SlotSeries {
            counter: child(vec, labels),
            base,
        });
        slots.by_series.insert(key, slot);
        (slot, base)
    }

    /// Takes back the slot of the series `labels` of the metric `name`, once the series is
    /// removed. Counts made through old handles after that land in the slot (and may be
    /// exported under the series that gets it next): handles are retired before their series
    /// is forgotten, so this is at most a few queries in flight.
    fn free_slot(&self, name: &'static str, labels: &[&str]) {
        let key = (
            name,
            labels.iter().map(|label| (*label).to_owned()).collect(),
        );
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.by_series.remove(&key) {
            slots.series[slot as usize] = None;
            slots.free.push(slot);
        }
    }
}

/// The configured series (answers, failed-open decisions, banned rules) and their slots.
#[derive(Default)]
struct SlotTable {
    /// By metric name and label values: the series' slot.
    by_series: HashMap<(&'static str, Vec<String>), u32>,
    /// By slot: the series it counts for, `None` when free.
    series: Vec<Option<SlotSeries>>,
    /// Slots of forgotten series, to give out again.
    free: Vec<u32>,
}

/// The exported counter of a slot, and the shards' sum when the slot was given to it.
struct SlotSeries {
    counter: IntCounter,
    base: u64,
}

/// Adds every cell of `cells` to the sum at the same index of `sums`.
fn add_cells(sums: &mut [u64], cells: &[shards::Cell]) {
    for (sum, cell) in sums.iter_mut().zip(cells) {
        *sum = sum.wrapping_add(cell.get());
    }
}

/// Brings the exported `counter` up to `total`. A counter only grows: a total below it (which
/// cannot happen while only scrapes write it) leaves it as it is.
fn catch_up(counter: &IntCounter, total: u64) {
    let exported = counter.get();
    if total > exported {
        counter.inc_by(total - exported);
    }
}

/// The query duration histogram, summed from the shards at each scrape (a prometheus
/// `Histogram` takes atomic adds on lines every thread writes, per observation).
struct DurationCollector {
    desc: Desc,
    shards: Arc<Shards>,
}

impl DurationCollector {
    fn new(shards: Arc<Shards>) -> DurationCollector {
        DurationCollector {
            desc: Desc::new(
                DNS_QUERY_DURATION_SECONDS.to_owned(),
                "Time spent handling one DNS query, in seconds.".to_owned(),
                Vec::new(),
                HashMap::new(),
            )
            .expect("valid metric name"),
            shards,
        }
    }
}

impl Collector for DurationCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut buckets = [0u64; N_BUCKETS];
        let mut sum = 0.0;
        self.shards.for_each(|shard| {
            add_cells(&mut buckets, &shard.duration_buckets);
            sum += f64::from_bits(shard.duration_sum.get());
        });
        let mut cumulative = 0u64;
        let bounds = QUERY_DURATION_BUCKETS
            .iter()
            .zip(buckets)
            .map(|(&bound, count)| {
                cumulative += count;
                let mut bucket = proto::Bucket::default();
                bucket.set_cumulative_count(cumulative);
                bucket.set_upper_bound(bound);
                bucket
            })
            .collect();
        let mut histogram = proto::Histogram::default();
        // The count includes the last bucket, above every bound (`+Inf`).
        histogram.set_sample_count(buckets.iter().sum());
        histogram.set_sample_sum(sum);
        histogram.set_bucket(bounds);
        let mut metric = proto::Metric::default();
        metric.set_histogram(histogram);
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::HISTOGRAM);
        family.set_metric(vec![metric]);
        vec![family]
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

/// One counter per [`DnsEvent`], registered under its metric (a labelled series, or a plain
/// counter), all created at zero so they are exported before the first event.
fn dns_event_counters(registry: &Registry) -> [IntCounter; DnsEvent::ALL.len()] {
    let help = |name: &str| match name {
        DNS_RRL_LIMITED_TOTAL => "UDP responses held back by response rate limiting, by action.",
        DNS_MALFORMED_QUERIES_TOTAL => "DNS queries that could not be decoded.",
        DNS_TCP_REFUSED_TOTAL => "DNS/TCP connections closed on accept, by the limit they hit.",
        _ => "DNS/TCP connections closed by a timeout, by which.",
    };
    let mut vecs: Vec<(&str, IntCounterVec)> = Vec::new();
    let counters = DnsEvent::ALL.map(|event| match event.series() {
        (name, Some((label, value))) => {
            let position = vecs
                .iter()
                .position(|(n, _)| *n == name)
                .unwrap_or_else(|| {
                    let vec = IntCounterVec::new(Opts::new(name, help(name)), &[label])
                        .expect("valid metric name and labels");
                    vecs.push((name, vec));
                    vecs.len() - 1
                });
            child(&vecs[position].1, &[value])
        }
        (name, None) => {
            let counter = IntCounter::new(name, help(name)).expect("valid metric name");
            register(registry, &counter);
            counter
        }
    });
    for (_, vec) in &vecs {
        register(registry, vec);
    }
    counters
}
