//! The state manager: the one task that changes state and publishes snapshots.
//!
//! Reloads, datacenter reports, drains and the passing of time all come here as commands, one
//! at a time. Each accepted change is written to the store (with its audit entry) before it is
//! applied, then a new snapshot is assembled and published; the requester hears back only after
//! the snapshot is serving, so a 2xx to a report means DNS already answers by it.
//!
//! When the store cannot write (a full disk, a failing sync), the manager turns the control plane
//! read-only ([`ApplyError::ReadOnly`]), says so once at `error` with the failed write's context,
//! in a metric and through readiness, and probes the store every tick until it writes again.
//! Meanwhile report freshness is judged as of the moment the store failed: datacenters whose
//! agents keep trying to report are not made stale by our own failure, so DNS keeps answering by
//! the last published state. After recovery the paused time runs on for one report TTL, so that
//! agents can report again before the clock jumps to now.

use std::mem::discriminant;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError, DirectoryConfig, Problem, Source};
use crate::directory::Directory;
use crate::fleet::{Fleet, FleetEvent};
use crate::metrics::{ErrorKind, InternalError, Metrics};
use crate::routing::{DcState, DcStatus, ServiceId, Standing, Toggle, slow_start};
use crate::store::{
    AuditEntry, Change, ConfigVersion, DrainKey, Store, StoreError, StoredPlacement, VersionFile,
};

use super::banned::MAX_BANNED_RULES;
use super::directory::{placement_named, placement_of};
use super::live::{Clock, LiveState, unix_ms};
use super::readiness::Readiness;
use super::snapshot::{Counters, Loaded, Prepare, Snapshot};
use super::{Publisher, Shared};

/// How often the manager re-judges report freshness when nothing else happens.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// A reload's requester: who asked (for the audit log) and where the outcome goes.
type ReloadWaiter = (
    Option<AuditEntry>,
    oneshot::Sender<Result<u64, ConfigError>>,
);

/// Reloads in progress. One build runs at a time; requests that arrive while it runs wait for
/// the next one (their change may postdate what the running one read), which builds only if the
/// files changed since: a burst of requests builds once.
struct Reloads<P: Prepare> {
    running: Option<JoinHandle<Result<Snapshot<P>, ConfigError>>>,
    /// Answered by the running build.
    waiting: Vec<ReloadWaiter>,
    /// Answered by the build after it.
    next: Vec<ReloadWaiter>,
}

impl<P: Prepare> Default for Reloads<P> {
    fn default() -> Self {
        Reloads {
            running: None,
            waiting: Vec::new(),
            next: Vec::new(),
        }
    }
}

/// A request to the state manager.
enum Command {
    Reload {
        audit: Option<AuditEntry>,
        reply: oneshot::Sender<Result<u64, ConfigError>>,
    },
    Apply {
        change: Change,
        audit: AuditEntry,
        force: bool,
        reply: oneshot::Sender<Result<u64, ApplyError>>,
    },
    Refresh {
        reply: oneshot::Sender<u64>,
    },
}

/// A change the manager did not apply.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A safety rail refused it; nothing changed.
    #[error("{0}")]
    Refused(String),
    /// The store cannot write (a full disk, a failing sync); nothing changed, and no write will
    /// succeed until the store recovers, which the manager notices by itself.
    #[error(
        "the state store cannot write ({0}); the control plane is read-only until it recovers, and DNS keeps answering by the last published state"
    )]
    ReadOnly(StoreError),
    /// The store refused the change for another reason (a value it cannot encode or that does
    /// not fit the stored state); nothing changed.
    #[error("the state store failed: {0}")]
    Store(StoreError),
    /// The fleet's etcd cannot be reached; nothing changed, and no write will succeed until it
    /// returns, which the manager notices by itself.
    #[error(
        "the fleet's state store (etcd) is unreachable ({0}); the control plane is read-only until it returns, and DNS keeps answering by the last published state"
    )]
    Unreachable(String),
    /// etcd refused the change for another reason (a value it cannot encode); nothing changed.
    #[error("the fleet's state store (etcd) failed: {0}")]
    Fleet(String),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// What an accepted change waits for before its requester hears back.
enum Applied {
    /// Published: this generation serves it.
    Published(u64),
    /// Stored in etcd at this revision: answered when this instance's watch has applied it.
    At(i64),
}

/// A requester waiting for its write's revision to be applied.
type Pending = (i64, oneshot::Sender<Result<u64, ApplyError>>);

/// Sends commands to the running state manager.
#[derive(Clone)]
pub struct StateHandle {
    commands: mpsc::Sender<Command>,
}

/// The manager's end of [`StateHandle`].
pub struct StateCommands {
    commands: mpsc::Receiver<Command>,
}

/// A connected handle and receiver.
pub fn state_channel() -> (StateHandle, StateCommands) {
    let (tx, rx) = mpsc::channel(64);
    (StateHandle { commands: tx }, StateCommands { commands: rx })
}

impl StateHandle {
    /// Reloads configuration, zones and geo database; on success the new snapshot is serving
    /// when this returns. `audit` records who asked (none for SIGHUP).
    ///
    /// # Errors
    ///
    /// The problems that kept the new configuration out (the old one keeps serving).
    pub async fn reload_as(&self, audit: Option<AuditEntry>) -> Result<u64, ConfigError> {
        let (reply, rx) = oneshot::channel();
        let stopped = || ConfigError {
            problems: vec![Problem::new("server", "shutting down")],
        };
        self.commands
            .send(Command::Reload { audit, reply })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Reloads, unaudited (SIGHUP, tests).
    ///
    /// # Errors
    ///
    /// As [`StateHandle::reload_as`].
    pub async fn reload(&self) -> Result<u64, ConfigError> {
        self.reload_as(None).await
    }

    /// Stores `change` with its audit entry and publishes the result; returns the generation
    /// now serving.
    ///
    /// # Errors
    ///
    /// [`ApplyError`] when a safety rail refuses the change (unless `force`) or the store fails.
    pub async fn apply(
        &self,
        change: Change,
        audit: AuditEntry,
        force: bool,
    ) -> Result<u64, ApplyError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Apply {
                change,
                audit,
                force,
                reply,
            })
            .await
            .map_err(|_| ApplyError::ShuttingDown)?;
        rx.await.map_err(|_| ApplyError::ShuttingDown)?
    }

    /// Re-judges report freshness now (the manager also does so every second).
    pub async fn refresh(&self) -> u64 {
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Refresh { reply })
            .await
            .is_err()
        {
            return 0;
        }
        rx.await.unwrap_or(0)
    }
}

/// The manager: owns the publisher, the live state and the store.
pub struct Manager<P: Prepare> {
    publisher: Publisher<P>,
    source: Source,
    store: Arc<Store>,
    clock: Clock,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    /// Whether the store is failing, and since when. A `Mutex` only because the manager's
    /// methods take `&self` across `.await`s (so it must be `Sync`); only the manager's own task
    /// ever takes it, briefly and never across an `.await`.
    health: Mutex<StoreHealth>,
    /// The fleet's shared state, when the backend is etcd: writes go there, and the changes its
    /// watch delivers are applied here; `store` is then the local copy for warm starts.
    fleet: Option<Fleet>,
}

mod fleet;
pub use fleet::ETCD_PROBLEM_PATH;
use fleet::{FleetConfigs, Publishing, next_event};

/// The store's health as the manager last saw it.
#[derive(Debug, Clone, Copy, Default)]
enum StoreHealth {
    /// Writes succeed.
    #[default]
    Writable,
    /// Writes fail since this instant (on the control plane's clock).
    Failing { since: SystemTime },
    /// Writes failed from `since` until `recovered`; freshness is still judged on paused time
    /// until one report TTL after `recovered`.
    Settling {
        since: SystemTime,
        recovered: SystemTime,
    },
}

impl<P: Prepare> Manager<P> {
    /// Restores the live state from `store`, builds and shares the first snapshot.
    ///
    /// # Errors
    ///
    /// When the store cannot be read.
    pub fn start(
        source: Source,
        loaded: Loaded<P>,
        store: Arc<Store>,
        clock: Clock,
        metrics: Arc<Metrics>,
        readiness: Readiness,
    ) -> Result<(Manager<P>, Shared<P>), StoreError> {
        let persisted = store.load()?;
        let restored = persisted.reports.len();
        let mut live = LiveState::restored(persisted);
        live.banned = live.banned.with_counters(|id| metrics.banned_counter(id));
        live.directory = load_directory(&store, &loaded.config)?;
        if let Some(directory) = &live.directory {
            metrics.set_pins(directory.n_pins() as u64);
        }
        if restored > 0 {
            info!(
                reports = restored,
                drains = live.drains.len(),
                "restored state from the store, unverified until fresh reports arrive"
            );
        }
        let loaded = with_counters(loaded, &metrics);
        let first = Snapshot::assemble(Arc::new(loaded), Arc::new(live), None, 1, clock.now());
        let (shared, publisher) = Shared::new(first);
        let manager = Manager {
            publisher,
            source,
            store,
            clock,
            metrics,
            readiness,
            health: Mutex::default(),
            fleet: None,
        };
        manager.metrics.set_store_writable(true);
        manager.record_version(&manager.publisher.current().loaded);
        manager.after_publish(None);
        Ok((manager, shared))
    }

    /// Serves commands until `shutdown`, re-judging freshness every [`REFRESH_INTERVAL`].
    ///
    /// Reloads are read and built off this task (see [`Reloads`]): reports, drains and refreshes
    /// go on being applied while a reload builds, and a burst of reloads builds at most twice.
    pub async fn run(self, mut commands: StateCommands, shutdown: CancellationToken) {
        // Ticks fall on whole intervals of the clock (whole seconds), the same instants on every
        // instance of a fleet: a datacenter whose report (stamped once, by the instance that
        // took it) ages out turns stale on all of them at the same tick, within clock skew.
        let period = REFRESH_INTERVAL.as_millis() as u64;
        let into = Duration::from_millis(unix_ms(self.clock.now()) % period);
        let first = tokio::time::Instant::now() + (REFRESH_INTERVAL - into);
        let mut tick = tokio::time::interval_at(first, REFRESH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut reloads: Reloads<P> = Reloads::default();
        let mut events = self.follow_fleet(&shutdown);
        let mut pending: Vec<Pending> = Vec::new();
        let mut configs: FleetConfigs<P> = FleetConfigs::default();
        loop {
            tokio::select! {
                command = commands.commands.recv() => match command {
                    Some(Command::Reload { audit, reply }) => {
                        if reloads.running.is_some() {
                            // The running build may have read the files before this request's
                            // change: it waits for the next one.
                            reloads.next.push((audit, reply));
                        } else {
                            reloads.waiting.push((audit, reply));
                            reloads.running = Some(self.start_reload());
                        }
                    }
                    Some(command) => {
                        if let Some(waiter) = self.handle(command).await {
                            pending.push(waiter);
                            self.answer_pending(&mut pending, None);
                        }
                    }
                    None => break,
                },
                Some(event) = next_event(&mut events) => {
                    let lost = match &event {
                        FleetEvent::Down(why) => Some(why.clone()),
                        _ => None,
                    };
                    if let Some((pointer, revision)) = self.on_fleet_event(event).await {
                        self.heard_config(&mut configs, pointer, revision);
                    }
                    self.answer_pending(&mut pending, lost.as_deref());
                }
                loaded = async {
                    configs.running().expect("only polled while loading").await
                }, if configs.running().is_some() => {
                    let (version, built) = loaded.expect("loading a configuration does not panic");
                    self.finish_config_load(&mut configs, version, built).await;
                }
                built = async {
                    reloads.running.as_mut().expect("only polled while running").await
                }, if reloads.running.is_some() => {
                    reloads.running = None;
                    let built = built.expect("loading a configuration does not panic");
                    let waiting = std::mem::take(&mut reloads.waiting);
                    let audits = waiting.iter().filter_map(|(audit, _)| audit.clone()).collect();
                    let replies = waiting.into_iter().map(|(_, reply)| reply);
                    // With etcd a reload publishes to the fleet, and serves here when the
                    // fleet's version does.
                    let outcome = match &self.fleet {
                        Some(fleet) => self.publish_reload(fleet, &mut configs, built, audits).await,
                        None => Publishing::Done(self.finish_reload(built, audits).await),
                    };
                    match outcome {
                        Publishing::Done(outcome) => {
                            for reply in replies {
                                let _ = reply.send(outcome.clone());
                            }
                        }
                        Publishing::Wait(version) => {
                            self.wait_for_config(&mut configs, version, replies);
                        }
                    }
                    if !reloads.next.is_empty() {
                        reloads.waiting = std::mem::take(&mut reloads.next);
                        reloads.running = Some(self.start_reload());
                    }
                }
                _ = tick.tick() => {
                    // With etcd, its follower says when writes work again.
                    if self.fleet.is_none() {
                        self.probe_store().await;
                    }
                    self.refresh(false);
                }
                () = shutdown.cancelled() => break,
            }
        }
    }

    /// Handles one command; a write stored in etcd comes back as a waiter, answered once this
    /// instance's watch has applied its revision.
    async fn handle(&self, command: Command) -> Option<Pending> {
        match command {
            Command::Reload { reply, .. } => {
                // `run` takes reloads off this path; nothing else sends them here.
                let _ = reply.send(Err(ConfigError {
                    problems: vec![Problem::new("server", "reload sent past the manager loop")],
                }));
            }
            Command::Apply {
                change,
                audit,
                force,
                reply,
            } => {
                let applied = match (&self.fleet, &change) {
                    // An instance drain is this instance's own: stored locally, as without etcd.
                    (Some(fleet), change) if !matches!(change, Change::InstanceDrain { .. }) => {
                        self.apply_fleet(fleet, change.clone(), audit, force).await
                    }
                    _ => self
                        .apply(change, audit, force)
                        .await
                        .map(Applied::Published),
                };
                match applied {
                    Ok(Applied::At(revision)) => return Some((revision, reply)),
                    Ok(Applied::Published(generation)) => {
                        let _ = reply.send(Ok(generation));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            Command::Refresh { reply } => {
                let _ = reply.send(self.refresh(true));
            }
        }
        None
    }

    /// Reads and builds a new configuration on the blocking pool: the files (keeping the geo
    /// database when unchanged), and a snapshot of it with the current live state, which builds
    /// every decision map whose inputs changed. The manager goes on serving meanwhile. Files
    /// that did not change since the serving configuration was read build nothing: the serving
    /// configuration is published again, as a new generation.
    fn start_reload(&self) -> JoinHandle<Result<Snapshot<P>, ConfigError>> {
        let source = self.source.clone();
        let current = self.publisher.current();
        let metrics = self.metrics.clone();
        let now = self.judge_time();
        tokio::task::spawn_blocking(move || {
            let loaded = if current.loaded.unchanged(&source) {
                current.loaded.clone()
            } else {
                metrics.record_config_build();
                let loaded = Loaded::<P>::reload(&source, Some(&current.loaded))?;
                Arc::new(with_counters(loaded, &metrics))
            };
            Ok(assemble_off_task(loaded, &current, now))
        })
    }

    /// Publishes a reload built by [`Manager::start_reload`], with the live state as it is now
    /// (reports may have arrived while it built: only what they changed is built again).
    async fn finish_reload(
        &self,
        built: Result<Snapshot<P>, ConfigError>,
        audits: Vec<AuditEntry>,
    ) -> Result<u64, ConfigError> {
        let built = match built {
            Ok(built) => built,
            Err(error) => {
                self.metrics.record_reload(false);
                warn!(source = %self.source, problems = error.problems.len(), "reload failed, still serving the previous configuration");
                for problem in &error.problems {
                    warn!("{problem}");
                }
                return Err(error);
            }
        };
        self.record_audits(audits).await;
        let loaded = built.loaded.clone();
        self.record_version(&loaded);
        let current = self.publisher.current();
        let mut live = current.live.clone();
        // Datacenters the reload adds (to the configuration or to a service's pool) ramp
        // under slow start from now.
        Arc::make_mut(&mut live).note_added(
            &current.loaded.config,
            &loaded.config,
            unix_ms(self.judge_time()),
        );
        if live.directory.is_none() && loaded.config.directory.is_some() {
            // The directory was just configured: load (or lay out) its stored state.
            let store = self.store.clone();
            let config = loaded.config.clone();
            let directory = tokio::task::spawn_blocking(move || load_directory(&store, &config))
                .await
                .expect("loading the directory does not panic");
            match directory {
                Ok(directory) => Arc::make_mut(&mut live).directory = directory,
                Err(error) => warn!(%error, "could not load the user directory"),
            }
        }
        // The snapshot built off this task lends its maps, rankings and answers.
        let snapshot = Snapshot::assemble(
            loaded,
            live,
            Some(&built),
            current.generation + 1,
            self.judge_time(),
        );
        let generation = snapshot.generation;
        self.publisher.publish(snapshot);
        self.metrics.record_reload(true);
        self.after_publish(Some(&current));
        Ok(generation)
    }

    /// Writes the audit entries of reload requests.
    async fn record_audits(&self, audits: Vec<AuditEntry>) {
        for audit in audits {
            let store = self.store.clone();
            let stored =
                tokio::task::spawn_blocking(move || store.apply(&Change::AuditOnly, &audit))
                    .await
                    .expect("store writes do not panic");
            match stored {
                Ok(_) => self.store_writes(),
                Err(error) => self.store_failed(&error, "audit", "reload", "configuration"),
            }
        }
    }

    async fn apply(
        &self,
        change: Change,
        audit: AuditEntry,
        force: bool,
    ) -> Result<u64, ApplyError> {
        let current = self.publisher.current();
        let change = current.live.stamp(&current.loaded.config, change);
        let next = current.live.with(&change, audit.unix_ms);
        if !force && let Change::Drain { key, drained: true } = &change {
            refuse_last_drain(&current, &next, key, &self.clock)?;
        }
        refuse_too_many_bans(&change, &next)?;
        let store = self.store.clone();
        let (action, target) = (audit.action.clone(), audit.target.clone());
        let stored = tokio::task::spawn_blocking(move || store.apply(&change, &audit))
            .await
            .expect("store writes do not panic");
        if let Err(error) = stored {
            self.store_failed(&error, "apply", &action, &target);
            return Err(if error.is_io() {
                ApplyError::ReadOnly(error)
            } else {
                ApplyError::Store(error)
            });
        }
        self.store_writes();
        Ok(self.publish_live(next))
    }

    /// Republishes when the passing of time changed a datacenter's standing (or when forced);
    /// returns the generation serving afterwards.
    fn refresh(&self, force: bool) -> u64 {
        let current = self.publisher.current();
        let now = self.judge_time();
        let states = current.live.dc_states(&current.loaded.config, now);
        let changed = current
            .loaded
            .config
            .services
            .iter()
            .enumerate()
            .any(|(s, service)| {
                current
                    .loaded
                    .config
                    .datacenters
                    .iter()
                    .enumerate()
                    .any(|(d, dc)| {
                        let id = ServiceId(s as u16);
                        let before = Standing::of(dc, &current.routing.states()[d], id, service);
                        let after = Standing::of(dc, &states[d], id, service);
                        // A slow start step is a change of the decision too.
                        let ramp_before =
                            slow_start(service, id, &current.routing.states()[d]).map(|r| r.0);
                        let ramp_after = slow_start(service, id, &states[d]).map(|r| r.0);
                        discriminant(&before) != discriminant(&after) || ramp_before != ramp_after
                    })
            });
        self.update_gauges(&current.loaded, &current.live, now);
        if !(changed || force) {
            return current.generation;
        }
        let snapshot = Snapshot::assemble(
            current.loaded.clone(),
            current.live.clone(),
            Some(&current),
            current.generation + 1,
            now,
        );
        let generation = snapshot.generation;
        self.publisher.publish(snapshot);
        self.after_publish(None);
        generation
    }

    /// The instant report freshness is judged at: now, unless the store failed (then the moment
    /// it failed, so that our own failure makes no datacenter stale), or recovered less than one
    /// report TTL ago (then the paused time running on from that moment).
    pub(super) fn judge_time(&self) -> SystemTime {
        let now = self.clock.now();
        let health = *self.health.lock().unwrap_or_else(PoisonError::into_inner);
        match health {
            StoreHealth::Writable => now,
            StoreHealth::Failing { since } => since.min(now),
            StoreHealth::Settling { since, recovered } => {
                let settle = self.publisher.current().loaded.config.control.report_ttl;
                let after = now.duration_since(recovered).unwrap_or_default();
                if after < settle {
                    since + after
                } else {
                    *self.health.lock().unwrap_or_else(PoisonError::into_inner) =
                        StoreHealth::Writable;
                    now
                }
            }
        }
    }

    /// Records a failed store write: the first failure of an outage is logged at `error` (with
    /// what was being written), later ones at `warn`; every one is counted and kept for
    /// `GET /v1/errors`. A failure that is not
    /// the disk's (a value the store refuses) is logged at `error` and changes no health.
    fn store_failed(&self, failure: &StoreError, operation: &str, action: &str, target: &str) {
        self.metrics.record_store_failure();
        self.metrics.keep_error(InternalError {
            unix_ms: unix_ms(self.clock.now()),
            kind: ErrorKind::Store,
            context: format!("store {operation} {action} {target}"),
            message: failure.to_string(),
        });
        if !failure.is_io() {
            error!(error = %failure, operation, action, target, "the state store refused a write");
            return;
        }
        self.enter_read_only(&failure.to_string(), operation, action, target);
    }

    /// Starts (or continues) an outage of the state store: writes are refused until it ends.
    pub(super) fn enter_read_only(
        &self,
        failure: &str,
        operation: &str,
        action: &str,
        target: &str,
    ) {
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        if let StoreHealth::Failing { .. } = *health {
            warn!(error = %failure, operation, action, target, "state store write failed, still read-only");
            return;
        }
        let since = match *health {
            // A failure while settling resumes the pause where it stood.
            StoreHealth::Settling { since, recovered } => {
                since
                    + self
                        .clock
                        .now()
                        .duration_since(recovered)
                        .unwrap_or_default()
            }
            _ => self.clock.now(),
        };
        *health = StoreHealth::Failing { since };
        drop(health);
        error!(
            error = %failure,
            operation,
            action,
            target,
            "the state store cannot write: the control plane is read-only and DNS keeps answering by the last published state until it recovers"
        );
        self.metrics.set_store_writable(false);
        self.metrics.state().set_read_only(true);
        self.readiness.set_store_failing(true);
    }

    /// Records a successful store write; ends an outage.
    pub(super) fn store_writes(&self) {
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        if let StoreHealth::Failing { since } = *health {
            *health = StoreHealth::Settling {
                since,
                recovered: self.clock.now(),
            };
            drop(health);
            info!("the state store writes again: the control plane accepts writes");
            self.metrics.set_store_writable(true);
            self.metrics.state().set_read_only(false);
            self.readiness.set_store_failing(false);
        }
    }

    /// While the store is failing, tries a small write; a success ends the outage.
    async fn probe_store(&self) {
        let failing = matches!(
            *self.health.lock().unwrap_or_else(PoisonError::into_inner),
            StoreHealth::Failing { .. }
        );
        if !failing {
            return;
        }
        let store = self.store.clone();
        let probed = tokio::task::spawn_blocking(move || store.probe())
            .await
            .expect("store writes do not panic");
        match probed {
            Ok(()) => self.store_writes(),
            // Still failing: counted, logged at `debug` only, since the outage was announced.
            Err(error) => {
                self.metrics.record_store_failure();
                tracing::debug!(%error, "state store probe failed");
            }
        }
    }

    /// `loaded`'s configuration and zone files as a stored version, first seen now.
    pub(super) fn stored_version(&self, loaded: &Loaded<P>) -> ConfigVersion {
        ConfigVersion {
            hash: loaded.config_version.clone(),
            first_seen_unix_ms: unix_ms(self.clock.now()),
            text: loaded.config_text.to_string(),
            files: loaded
                .zone_files
                .iter()
                .map(|(name, text)| VersionFile {
                    name: name.clone(),
                    text: text.to_string(),
                })
                .collect(),
        }
    }

    fn record_version(&self, loaded: &Loaded<P>) {
        let version = self.stored_version(loaded);
        match self.store.put_config_version(&version) {
            Ok(()) => self.store_writes(),
            Err(error) => {
                self.store_failed(&error, "record", "config-version", &version.hash);
            }
        }
    }

    /// Logs, readiness and gauges after a publish; forgets datacenters a reload removed.
    pub(super) fn after_publish(&self, replaced: Option<&Snapshot<P>>) {
        let snapshot = self.publisher.current();
        let config = &snapshot.loaded.config;
        if let Some(replaced) = replaced {
            for dc in &replaced.loaded.config.datacenters {
                if config.datacenter_index(&dc.name).is_none() {
                    self.metrics.forget_datacenter(&dc.name);
                }
            }
            for service in &replaced.loaded.config.services {
                if !config.services.iter().any(|s| s.id == service.id) {
                    self.metrics.forget_service(&service.id);
                }
            }
        }
        self.metrics.set_generation(snapshot.generation);
        // Failing open is counted per query; say it once per snapshot in the log.
        for (s, service) in config.services.iter().enumerate() {
            if !has_eligible(config, snapshot.routing.states(), ServiceId(s as u16)) {
                warn!(service = %service.id, all_down = ?service.all_down, "every datacenter of the service is ineligible");
            }
        }
        self.readiness.set_drained(snapshot.live.instance_drained);
        for toggle in Toggle::ALL {
            self.metrics
                .set_toggle(toggle.name(), snapshot.live.toggles.is_on(toggle));
        }
        self.update_gauges(&snapshot.loaded, &snapshot.live, snapshot.built_at);
        let (zones, names) = P::summary(&snapshot.loaded.zones);
        info!(
            generation = snapshot.generation,
            zones,
            names,
            services = config.services.len(),
            geo = snapshot.loaded.geo.description(),
            "snapshot published"
        );
    }

    fn update_gauges(&self, loaded: &Loaded<P>, live: &LiveState, now: SystemTime) {
        let states = live.dc_states(&loaded.config, now);
        for (dc, state) in loaded.config.datacenters.iter().zip(&states) {
            self.metrics
                .set_datacenter_state(&dc.name, DcStatus::of(state));
            if let Some(r) = &state.report {
                self.metrics.set_report_age(&dc.name, r.age.as_secs_f64());
                // A datacenter with no capacity exports 0, not infinity.
                let utilization = Some(r.utilization()).filter(|u| u.is_finite());
                self.metrics
                    .set_utilization(&dc.name, utilization.unwrap_or(0.0));
            }
        }
        for (i, service) in loaded.config.services.iter().enumerate() {
            if service.slow_start.is_zero() {
                continue;
            }
            for pool in &service.pools {
                let (dc, state) = (
                    &loaded.config.datacenters[pool.datacenter],
                    &states[pool.datacenter],
                );
                let id = ServiceId(i as u16);
                let share = if !live.toggles.is_on(Toggle::SlowStart) {
                    1.0
                } else if Standing::of(dc, state, id, service).is_eligible() {
                    slow_start(service, id, state).map_or(1.0, |(ramp, _)| ramp.share())
                } else {
                    0.0
                };
                self.metrics.set_slow_start(&dc.name, &service.id, share);
            }
        }
    }
}

/// Refuses a banned-query rule beyond [`MAX_BANNED_RULES`].
fn refuse_too_many_bans(change: &Change, next: &LiveState) -> Result<(), ApplyError> {
    if matches!(change, Change::Ban { .. }) && next.banned_rules.len() > MAX_BANNED_RULES {
        return Err(ApplyError::Refused(format!(
            "{MAX_BANNED_RULES} banned-query rules are in force already; remove one first"
        )));
    }
    Ok(())
}

/// Refuses a drain that would leave a service it touches with no eligible datacenter.
fn refuse_last_drain<P: Prepare>(
    current: &Snapshot<P>,
    next: &LiveState,
    key: &DrainKey,
    clock: &Clock,
) -> Result<(), ApplyError> {
    let config = &current.loaded.config;
    let Some(dc) = config.datacenter_index(&key.datacenter) else {
        return Ok(());
    };
    let states = next.dc_states(config, clock.now());
    for (s, service) in config.services.iter().enumerate() {
        let touched = service.pools.iter().any(|p| p.datacenter == dc)
            && key.service.as_ref().is_none_or(|name| *name == service.id);
        if !touched {
            continue;
        }
        if !has_eligible(config, &states, ServiceId(s as u16)) {
            return Err(ApplyError::Refused(format!(
                "draining {} would leave service {} with no eligible datacenter; add \"force\": true to drain anyway",
                key.datacenter, service.id
            )));
        }
    }
    Ok(())
}

/// The stored user directory, or the configured initial layout (stored now) when there is none.
/// `None` when the configuration has no directory.
fn load_directory(store: &Store, config: &Config) -> Result<Option<Directory>, StoreError> {
    let Some(settings) = &config.directory else {
        return Ok(None);
    };
    let mut names: Vec<String> = config
        .datacenters
        .iter()
        .map(|dc| dc.name.clone())
        .collect();
    let mut pins = Vec::new();
    let stored = store.load_directory(&mut |user, home, replica| {
        pins.push((user.to_owned(), placement_named(&mut names, home, replica)));
    })?;
    let buckets: Vec<StoredPlacement> = match stored {
        Some((_, buckets)) => buckets,
        None => {
            let layout = default_layout(config, settings);
            store.init_directory(settings.n_buckets, &layout)?;
            layout
        }
    };
    let buckets: Vec<_> = buckets
        .iter()
        .map(|p| placement_of(&mut names, p))
        .collect();
    info!(
        buckets = buckets.len(),
        pins = pins.len(),
        "user directory loaded"
    );
    Ok(Some(Directory::new(names, buckets, pins)))
}

/// The configured initial bucket layout (bucket b: home = b mod n, replica = the next).
fn default_layout(config: &Config, settings: &DirectoryConfig) -> Vec<StoredPlacement> {
    Directory::round_robin(settings.datacenters.len() as u16, settings.n_buckets)
        .into_iter()
        .map(|p| StoredPlacement {
            home: config.datacenters[settings.datacenters[usize::from(p.home)]]
                .name
                .clone(),
            replica: config.datacenters[settings.datacenters[usize::from(p.replica)]]
                .name
                .clone(),
        })
        .collect()
}

/// Whether any datacenter of `service` is eligible in `states`.
fn has_eligible(config: &Config, states: &[DcState], id: ServiceId) -> bool {
    let service = &config.services[usize::from(id.0)];
    service.pools.iter().any(|pool| {
        Standing::of(
            &config.datacenters[pool.datacenter],
            &states[pool.datacenter],
            id,
            service,
        )
        .is_eligible()
    })
}

/// A snapshot of `loaded` with `current`'s live state, built on the blocking pool for the
/// manager to publish later (it re-assembles it then with the live state of that moment,
/// borrowing what this built).
fn assemble_off_task<P: Prepare>(
    loaded: Arc<Loaded<P>>,
    current: &Snapshot<P>,
    now: SystemTime,
) -> Snapshot<P> {
    Snapshot::assemble(
        loaded,
        current.live.clone(),
        Some(current),
        current.generation,
        now,
    )
}

fn with_counters<P: Prepare>(mut loaded: Loaded<P>, metrics: &Metrics) -> Loaded<P> {
    let services: Vec<&str> = loaded
        .config
        .services
        .iter()
        .map(|s| s.id.as_str())
        .collect();
    let datacenters: Vec<&str> = loaded
        .config
        .datacenters
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    loaded.counters = Counters {
        answers: metrics.answer_counters(&services, &datacenters),
        failed_open: metrics.failed_open_counters(&services),
    };
    loaded
}
