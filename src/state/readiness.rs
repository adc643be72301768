//! Readiness: whether this instance should receive traffic.
//!
//! The state manager owns the "drained" flag (it applies instance drains) and the "store
//! failing" flag (it sees every store write), and the app owns the "serving" flag (first
//! snapshot published, not shutting down); `/readyz` only reads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Whether the server should receive traffic: serving, not drained by an operator, not
/// shutting down.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    /// Atomic flags rather than a lock: probes only read them, and each has one writer (the app
    /// for serving, the state manager for drained).
    serving: Arc<AtomicBool>,
    drained: Arc<AtomicBool>,
    /// Set by the state manager while the state store cannot write.
    store_failing: Arc<AtomicBool>,
    /// Why this instance serves an older configuration than its fleet's, while it does: set by
    /// the state manager, read by `/readyz`. A `Mutex` because it holds text; both sides take it
    /// briefly, never across an `.await`, and never on the query path.
    config_rejected: Arc<Mutex<Option<String>>>,
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

    /// Marks the state store as failing (the control plane is read-only), or writable again.
    pub fn set_store_failing(&self, failing: bool) {
        self.store_failing.store(failing, Ordering::Release);
    }

    /// Whether the state store is failing.
    pub fn store_failing(&self) -> bool {
        self.store_failing.load(Ordering::Acquire)
    }

    /// Records why the fleet's configuration version could not be loaded here (`None`: this
    /// instance serves the fleet's version, or the fleet has none).
    pub fn set_config_rejected(&self, reason: Option<String>) {
        *self
            .config_rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = reason;
    }

    /// Why the fleet's configuration version could not be loaded here, while it could not.
    pub fn config_rejected(&self) -> Option<String> {
        self.config_rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the server is ready: serving, not drained, the state store writes, and it serves
    /// its fleet's configuration.
    pub fn get(&self) -> bool {
        self.serving.load(Ordering::Acquire)
            && !self.drained.load(Ordering::Acquire)
            && !self.store_failing()
            && self.config_rejected().is_none()
    }
}
