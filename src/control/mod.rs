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

/// Whether the server should receive traffic: serving, not drained by an operator, not
/// shutting down.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    /// Atomic flags rather than a lock: probes only read them, and each has one writer (the app
    /// for serving, the state manager for drained).
    serving: Arc<AtomicBool>,
    drained: Arc<AtomicBool>,
}

impl Readiness {
    /// Marks the server as serving DNS from a published snapshot, or as shutting down.
    pub fn set(&self, serving: bool) {
        self.serving.store(serving, Ordering::Release);
    }

    /// Marks the instance as drained by an operator (or `--drained`), or undrained.
    pub fn set_drained(&self, drained: bool) {
        self.drained.store(drained, Ordering::Release);
    }

    /// Whether the server is ready.
    pub fn get(&self) -> bool {
        self.serving.load(Ordering::Acquire) && !self.drained.load(Ordering::Acquire)
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
