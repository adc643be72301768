//! Integration tests, built as one binary: real sockets against an in-process server
//! (`support::TestServer`), and the real `meridian` binary for the command line.
//!
//! - `support`: the test server, its configuration and zone, the tracing subscriber;
//! - `client`: a small DNS client on hickory-proto (UDP, TCP, raw bytes);
//! - `answers`: authoritative behaviour (flags, rcodes, negative answers, CNAME, ANY, CHAOS,
//!   NSID, header checks);
//! - `authority`: DS at a cut, RRSIG/NSEC at a CNAME, the DO bit, `version.bind`;
//! - `ecs`: routing by EDNS Client Subnet and the scope of replies;
//! - `explain`: `/v1/explain` against DNS for every kind of name;
//! - `truncation`: UDP size limits, TC and TCP;
//! - `transport`: rate limiting, TCP limits and timeouts, pipelining, FORMERR under abuse;
//! - `listeners`: binding the DNS sockets;
//! - `reload`: reloads and shutdown of a running server;
//! - `cli`: `meridian check-config`, `meridian serve` and `meridian state`, exit codes and
//!   signals;
//! - `ctl`: `meridian ctl` (the real binary) against a running server;
//! - `deploy`: the Kubernetes manifests' configuration passes `check-config`, and their paths
//!   and ports match it;
//! - `hardening`: the control plane under abuse (access, rate limits, slow and idle
//!   connections, the connection cap, imports);
//! - `faults`: the state store on a full disk;
//! - `operations`: feature toggles, banned queries, the query log and error collection;
//! - `architecture`: the module map's directions, as `docs/ARCHITECTURE.md` states them;
//! - `zone_files`: zone files served exactly as written, and the checks made before serving.
//! - `fuzz`: every input kept from the fuzz targets in `fuzz/`, through the fuzzer's checks;
//! - `conformance`: meridian's answers against Knot DNS serving the same zones, and exact answers;
//! - `dname`: DNAME records and the CNAMEs synthesized from them (RFC 6672).
//! - `simulate`: what-if simulations checked against the answers after the change, the drain's
//!   capacity rail, `meridian ctl simulate` and `meridian simulate` offline.

#[path = "../common/mmdb_fixture.rs"]
mod mmdb_fixture;
// What the fuzz targets check, shared with `fuzz`, which runs their kept inputs.
#[path = "../../fuzz/src/checks.rs"]
mod fuzz_checks;

mod answers;
mod architecture;
mod authority;
mod balancing;
mod cli;
mod client;
mod conformance;
mod control;
mod ctl;
mod deploy;
mod dname;
mod ecs;
mod etcd;
mod explain;
mod faults;
mod fleet;
mod fuzz;
mod hardening;
mod listeners;
mod operations;
mod policies;
mod querylog;
mod reload;
mod simulate;
mod support;
mod transport;
mod truncation;
mod users;
mod zone_files;
