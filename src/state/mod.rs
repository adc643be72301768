//! The snapshot every query reads, and the single place that replaces it.
//!
//! [`Shared`] is the read side: any number of clones, each [`Shared::load`] an atomic load with
//! no lock. [`Publisher`] is the write side: exactly one exists, owned by whoever rebuilds
//! snapshots (the reloader), so every answer comes from one consistent, fully built view.
//!
//! This module sits below `dns` and `control`: it never names them. What queries read is a
//! type parameter ([`Prepare`]) that `dns` fills in; readiness ([`Readiness`]) lives here.

mod banned;
mod directory;
mod live;
mod manager;
mod readiness;
mod snapshot;

use std::sync::{Arc, mpsc};

use arc_swap::ArcSwap;

pub use banned::{BanAction, BanError, BanRule, Banned, MAX_BANNED_RULES};
pub use directory::{DirectoryView, UserFacts, placement_of, reason_label, source_label};
pub use live::{Clock, LiveState, apply_directory, unix_ms};
pub use manager::{
    ApplyError, ETCD_PROBLEM_PATH, Manager, REFRESH_INTERVAL, StateCommands, StateHandle,
    state_channel,
};
pub use readiness::Readiness;
pub use snapshot::{Counters, Loaded, Prepare, Snapshot};

/// Widens the decision maps of each snapshot `queue` delivers, the latest of a burst only
/// (its maps are the ones served; maps it shares with earlier snapshots are widened once).
/// Ends when the publisher is dropped.
fn widen_in_background<P: Prepare>(queue: &mpsc::Receiver<Arc<Snapshot<P>>>) {
    while let Ok(mut snapshot) = queue.recv() {
        while let Ok(newer) = queue.try_recv() {
            snapshot = newer;
        }
        snapshot.routing.widen_scopes();
    }
}

/// The current snapshot, shared by every query.
pub struct Shared<P: Prepare> {
    /// `ArcSwap` rather than a lock: readers on the query path never wait, even while a reload
    /// publishes a new snapshot.
    current: Arc<ArcSwap<Snapshot<P>>>,
}

// Not derived: a derive would demand `P: Clone`, and only the `Arc` is cloned.
impl<P: Prepare> Clone for Shared<P> {
    fn clone(&self) -> Self {
        Shared {
            current: self.current.clone(),
        }
    }
}

/// The only writer of [`Shared`].
pub struct Publisher<P: Prepare> {
    shared: Shared<P>,
    /// Published snapshots whose decision maps are to be widened, for the thread that does it
    /// ([`widen_in_background`]); `None` when that thread could not start (then `publish`
    /// widens before it stores). A channel, so that the thread ends with the publisher.
    widen: Option<mpsc::Sender<Arc<Snapshot<P>>>>,
}

impl<P: Prepare> Shared<P> {
    /// Starts sharing `first`, and returns the one publisher allowed to replace it. Its
    /// decision maps are widened in the background, as [`Publisher::publish`] does.
    pub fn new(first: Snapshot<P>) -> (Shared<P>, Publisher<P>) {
        let first = Arc::new(first);
        let shared = Shared {
            current: Arc::new(ArcSwap::new(first.clone())),
        };
        let (widen, queue) = mpsc::channel();
        let widen = std::thread::Builder::new()
            .name("meridian-widen".to_owned())
            .spawn(move || widen_in_background(&queue))
            .ok()
            .map(|_| widen);
        let publisher = Publisher {
            shared: shared.clone(),
            widen,
        };
        publisher.widen(first);
        (shared, publisher)
    }

    /// The current snapshot; one atomic reference-count increment.
    pub fn load(&self) -> Arc<Snapshot<P>> {
        self.current.load_full()
    }

    /// The current snapshot for a short borrow, such as one query: `arc_swap`'s thread-local
    /// guard, so that query threads do not all write one reference count's cache line.
    pub fn peek(&self) -> arc_swap::Guard<Arc<Snapshot<P>>> {
        self.current.load()
    }
}

impl<P: Prepare> Publisher<P> {
    /// Replaces the snapshot; queries already running keep the one they loaded. Decision maps
    /// not yet widened are widened after it is stored, off the writer's path: until then their
    /// ECS scopes are the trie summaries' (correct, sometimes narrower).
    pub fn publish(&self, snapshot: Snapshot<P>) {
        let snapshot = Arc::new(snapshot);
        self.shared.current.store(snapshot.clone());
        self.widen(snapshot);
    }

    fn widen(&self, snapshot: Arc<Snapshot<P>>) {
        let queued = self
            .widen
            .as_ref()
            .map(|widen| widen.send(snapshot.clone()));
        if !matches!(queued, Some(Ok(()))) {
            snapshot.routing.widen_scopes();
        }
    }

    /// The snapshot currently published.
    pub fn current(&self) -> Arc<Snapshot<P>> {
        self.shared.load()
    }
}
