//! meridian: a geo-routing authoritative DNS server, a global DNS load balancer.
//!
//! Module map, top down; a module refers only to modules below it (`docs/ARCHITECTURE.md` has
//! the data flow and invariants, and `tests/it/architecture.rs` checks the directions):
//! - [`cli`]: the command line; [`ctl`]: its client of the control plane; [`app`]: wiring,
//!   reloads, shutdown;
//! - [`control`]: the HTTP control plane (the only `axum` user);
//! - [`dns`]: everything that speaks DNS (the only `hickory` user), and what a query reads:
//!   [`dns::Snapshot`] is the state's snapshot carrying the zones and prepared answers;
//! - [`querylog`]: the sampled query log: a lock-free sampler for the query path and a writer
//!   thread that writes JSON lines (what a line says comes from [`dns`], as a trait object);
//! - [`state`]: the immutable [`state::Snapshot`], its lock-free shared handle, the state
//!   manager and readiness;
//! - [`metrics`]: Prometheus (it imports only [`routing::DcStatus`], the datacenter states);
//! - [`store`]: the durable state (redb);
//! - [`directory`]: the user directory's pure core (hash buckets, pins, serving rules);
//! - [`traffic`]: the sampled record of recent traffic, and what-if simulations over it;
//! - [`routing`]: the pure routing core, rankings precomputed per geo cell;
//! - [`config`]: the YAML configuration, validated with every problem's path;
//! - [`geo`]: client location from a MaxMind-format database (the only `maxminddb` user) and
//!   our place vocabulary.
#![deny(unsafe_code)]

pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod ctl;
pub mod directory;
pub mod dns;
pub mod fleet;
pub mod geo;
pub mod metrics;
pub mod querylog;
pub mod routing;
pub mod state;
pub mod store;
pub mod traffic;

pub use app::run;
pub use config::Config;
