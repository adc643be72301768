//! Metric names: every series meridian exports, as `const`s, and the query histogram's buckets.
//!
//! Names follow Prometheus conventions (`meridian_` prefix, counters end in `_total`, durations in
//! `_seconds`); a test in `tests.rs` checks them. This file registers nothing.

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
/// Share of its clients a datacenter serves for a service during its slow start (1 when not
/// ramping), by datacenter and service.
pub const SLOW_START_SHARE: &str = "meridian_slow_start_share";
/// Configuration reloads, by outcome ("ok" or "failed").
pub const CONFIG_RELOADS_TOTAL: &str = "meridian_config_reloads_total";
/// Snapshots built from files by reloads: a reload whose files did not change since the running
/// configuration was read builds none, so a burst of reloads builds once.
pub const CONFIG_BUILDS_TOTAL: &str = "meridian_config_builds_total";
/// Control-plane HTTP requests, by route template and status code.
pub const CONTROL_REQUESTS_TOTAL: &str = "meridian_control_requests_total";
/// Generation of the snapshot currently serving queries.
pub const SNAPSHOT_GENERATION: &str = "meridian_snapshot_generation";
/// User directory lookups (HTTP and DNS), by where the placement came from and why the serving
/// datacenter was chosen.
pub const DIRECTORY_LOOKUPS_TOTAL: &str = "meridian_directory_lookups_total";
/// User directory lookups served from the replica because the home was ineligible.
pub const DIRECTORY_FAILOVERS_TOTAL: &str = "meridian_directory_failovers_total";
/// Always 1, labelled with the running build's `version` and git `commit`.
pub const BUILD_INFO: &str = "meridian_build_info";
/// Users pinned in the directory.
pub const DIRECTORY_PINS: &str = "meridian_directory_pins";
/// 1 while the state store accepts writes, 0 while it fails (the control plane is read-only).
pub const STORE_WRITABLE: &str = "meridian_store_writable";
/// State store writes (and recovery probes) that failed.
pub const STORE_WRITE_FAILURES_TOTAL: &str = "meridian_store_write_failures_total";
/// Failed `accept` calls on a listener (out of file descriptors, for one), by listener.
pub const ACCEPT_ERRORS_TOTAL: &str = "meridian_accept_errors_total";
/// Internal errors caught and kept for `GET /v1/errors`, by kind (`panic`).
pub const INTERNAL_ERRORS_TOTAL: &str = "meridian_internal_errors_total";
/// 1 while a feature toggle is on, 0 while an operator has it off, by toggle.
pub const TOGGLE_ENABLED: &str = "meridian_toggle_enabled";
/// Queries matched by a banned-query rule (dropped or REFUSED before any other work), by rule id.
pub const DNS_BANNED_TOTAL: &str = "meridian_dns_banned_queries_total";
/// Samples dropped because their bounded channel was full, by record (`traffic`: the traffic
/// record, which also counts networks beyond its cap; `query_log`: the query log).
pub const SAMPLES_DROPPED_TOTAL: &str = "meridian_samples_dropped_total";
/// Open control-plane (HTTP) connections.
pub const CONTROL_CONNECTIONS: &str = "meridian_control_connections";

/// UDP responses held back by response rate limiting, by action (`slipped`: sent as an empty
/// TC reply; `dropped`: not sent).
pub const DNS_RRL_LIMITED_TOTAL: &str = "meridian_dns_rrl_limited_total";
/// Queries that could not be decoded (answered FORMERR, or closing a TCP connection).
pub const DNS_MALFORMED_QUERIES_TOTAL: &str = "meridian_dns_malformed_queries_total";
/// DNS/TCP connections closed on accept, by the limit they hit (`max_connections_per_client`;
/// over `max_connections` a connection waits in the listen backlog instead).
pub const DNS_TCP_REFUSED_TOTAL: &str = "meridian_dns_tcp_refused_total";
/// DNS/TCP connections closed by a timeout, by which (`message`, `idle`).
pub const DNS_TCP_TIMEOUTS_TOTAL: &str = "meridian_dns_tcp_timeouts_total";

/// Upper bounds of the query duration histogram: 10 µs to 100 ms in 1-2.5-5 steps.
///
/// An authoritative answer from memory takes tens of microseconds; the upper buckets are there to
/// catch scheduler stalls, not normal work.
pub const QUERY_DURATION_BUCKETS: [f64; 13] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1,
];
/// The state revision this instance serves: etcd's revision of the last change applied (0 with
/// the embedded store). Equal on every instance of a fleet that agrees.
pub const STATE_REVISION: &str = "meridian_state_revision";
/// 1 while the state backend is reachable (etcd: the watch is established), else 0.
pub const STATE_BACKEND_UP: &str = "meridian_state_backend_up";
/// 1 while the control plane is read-only because the state backend cannot write.
pub const STATE_READ_ONLY: &str = "meridian_state_read_only";
/// 1 while the configuration version the fleet published could not be loaded here (the last
/// good one keeps serving).
pub const STATE_CONFIG_REJECTED: &str = "meridian_state_config_rejected";
/// Times this instance read the fleet's whole state again while running, by `reason`:
/// `compacted` (its watch's revision was compacted away) or `restored` (etcd's cluster id
/// changed or its revision went backwards: a restore from a backup).
pub const STATE_RESYNCS: &str = "meridian_state_resyncs_total";
