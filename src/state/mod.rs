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

/// Widens the decision maps of the snapshot currently published, each time `published` says
/// that a new one was: a burst of publications widens the latest only, and a snapshot that is
/// replaced while its maps are widened is let go before its next map (the maps it shares with
/// the new one are widened there, and the others are no longer served). So the thread holds
/// no snapshot but the current one, and a replaced snapshot is freed as soon as the queries
/// reading it let go, not after its whole widening: a queue of snapshots, each waiting for
/// every map of the one before, kept 10 health flips' snapshots alive at once (1.39 GB peak
/// resident at 1,000 services instead of 0.8). Ends when the publisher is dropped.
///
/// The thread, and the threads it starts to widen maps on every core, run at the lowest CPU
/// priority ([`lowest_priority`]): at 1,000 services over 100 datacenters with the full City
/// database, widening every map after a start takes about 35 CPU-seconds, and a wider scope
/// can wait where a query, a report or a reload cannot.
fn widen_in_background<P: Prepare>(shared: &Shared<P>, published: &mpsc::Receiver<()>) {
    lowest_priority();
    while published.recv().is_ok() {
        while published.try_recv().is_ok() {}
        let snapshot = shared.load();
        let current = || Arc::ptr_eq(&shared.peek(), &snapshot);
        snapshot.routing.widen_scopes_while(&current);
    }
}

/// Lowers the calling thread to nice 19, the lowest priority short of idle-only scheduling, so
/// that it takes only the CPU the other threads leave. Linux keeps a nice value per thread and
/// gives it to the threads that thread creates. Where that fails (or elsewhere), the thread
/// runs at normal priority.
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19) {
        tracing::info!(%error, "could not lower the priority of the thread that widens scopes");
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
    /// Tells the thread that widens decision maps ([`widen_in_background`]) that a snapshot
    /// was published; it reads the snapshot itself, so that none waits in a queue. `None`
    /// when that thread could not start (then `publish` widens after it stores). A channel,
    /// so that the thread ends with the publisher.
    widen: Option<mpsc::Sender<()>>,
}

impl<P: Prepare> Shared<P> {
    /// Starts sharing `first`, and returns the one publisher allowed to replace it. Its
    /// decision maps are widened in the background, as [`Publisher::publish`] does.
    pub fn new(first: Snapshot<P>) -> (Shared<P>, Publisher<P>) {
        let first = Arc::new(first);
        let shared = Shared {
            current: Arc::new(ArcSwap::new(first.clone())),
        };
        let (widen, published) = mpsc::channel();
        let reader = shared.clone();
        let widen = std::thread::Builder::new()
            .name("meridian-widen".to_owned())
            .spawn(move || widen_in_background(&reader, &published))
            .ok()
            .map(|_| widen);
        let publisher = Publisher {
            shared: shared.clone(),
            widen,
        };
        publisher.widen(&first);
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
        self.widen(&snapshot);
    }

    fn widen(&self, snapshot: &Arc<Snapshot<P>>) {
        let told = self.widen.as_ref().map(|widen| widen.send(()));
        if !matches!(told, Some(Ok(()))) {
            snapshot.routing.widen_scopes();
        }
    }

    /// The snapshot currently published.
    pub fn current(&self) -> Arc<Snapshot<P>> {
        self.shared.load()
    }
}
