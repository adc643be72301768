//! The HTTP control plane (axum): the only module that speaks HTTP.
//!
//! Today it serves the probes a supervisor needs: `/healthz` (the process is alive) and
//! `/readyz` (serving DNS from a published snapshot, not shutting down). Datacenter reports,
//! drain, explain and metrics will join them here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

/// Whether the server should receive traffic.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    /// An atomic flag rather than a lock: probes only read it, and two writers (startup and
    /// shutdown) each set it once.
    ready: Arc<AtomicBool>,
}

impl Readiness {
    /// Marks the server ready (first snapshot published, sockets serving) or not (draining).
    pub fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether the server is ready.
    pub fn get(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// The control plane's routes.
pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(readiness)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(readiness): State<Readiness>) -> (StatusCode, &'static str) {
    if readiness.get() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
