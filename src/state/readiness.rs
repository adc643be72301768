//! Readiness: whether this instance should receive traffic.
//!
//! The state manager owns the "drained" half (it applies instance drains) and the app owns the
//! "serving" half (first snapshot published, not shutting down); `/readyz` only reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
