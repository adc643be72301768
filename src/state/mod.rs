//! The snapshot every query reads, and the single place that replaces it.
//!
//! [`Shared`] is the read side: any number of clones, each [`Shared::load`] an atomic load with
//! no lock. [`Publisher`] is the write side: exactly one exists, owned by whoever rebuilds
//! snapshots (the reloader), so every answer comes from one consistent, fully built view.

mod directory;
mod live;
mod manager;
mod snapshot;

use std::sync::Arc;

use arc_swap::ArcSwap;

pub use directory::{DirectoryView, UserFacts, placement_of, reason_label, source_label};
pub use live::{Clock, LiveState, apply_directory, unix_ms};
pub use manager::{
    ApplyError, Manager, REFRESH_INTERVAL, StateCommands, StateHandle, state_channel,
};
pub use snapshot::{Counters, Loaded, Snapshot};

/// The current snapshot, shared by every query.
#[derive(Clone)]
pub struct Shared {
    /// `ArcSwap` rather than a lock: readers on the query path never wait, even while a reload
    /// publishes a new snapshot.
    current: Arc<ArcSwap<Snapshot>>,
}

/// The only writer of [`Shared`].
pub struct Publisher {
    shared: Shared,
}

impl Shared {
    /// Starts sharing `first`, and returns the one publisher allowed to replace it.
    pub fn new(first: Snapshot) -> (Shared, Publisher) {
        let shared = Shared {
            current: Arc::new(ArcSwap::from_pointee(first)),
        };
        let publisher = Publisher {
            shared: shared.clone(),
        };
        (shared, publisher)
    }

    /// The current snapshot; one atomic reference-count increment.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }
}

impl Publisher {
    /// Replaces the snapshot; queries already running keep the one they loaded.
    pub fn publish(&self, snapshot: Snapshot) {
        self.shared.current.store(Arc::new(snapshot));
    }

    /// The snapshot currently published.
    pub fn current(&self) -> Arc<Snapshot> {
        self.shared.load()
    }
}
