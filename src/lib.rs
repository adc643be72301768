//! meridian: a geo-routing authoritative DNS server, a global DNS load balancer.
//!
//! Module map (see `docs/ARCHITECTURE.md` for the data flow and invariants):
//! - [`cli`]: the command line; [`app`]: wiring, reloads, shutdown;
//! - [`config`]: the YAML configuration, validated with every problem's path;
//! - [`geo`]: client location from a MaxMind-format database (the only `maxminddb` user);
//! - [`routing`]: the pure routing core, rankings precomputed per geo cell;
//! - [`state`]: the immutable [`state::Snapshot`] and its lock-free shared handle;
//! - [`directory`]: the user directory's pure core (hash buckets, pins, serving rules);
//! - [`store`]: the durable state (redb); [`metrics`]: Prometheus;
//! - [`dns`]: everything that speaks DNS (the only `hickory` user);
//! - [`control`]: the HTTP control plane (the only `axum` user).
#![deny(unsafe_code)]

pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod directory;
pub mod dns;
pub mod geo;
pub mod metrics;
pub mod routing;
pub mod state;
pub mod store;

pub use app::run;
pub use config::Config;
