//! The manager's side of a fleet (the etcd backend): writes go to etcd as one transaction each,
//! and every change the watch delivers, this instance's own included, is applied here in etcd's
//! order. A write is answered once this instance's state has reached its revision, so a 2xx still
//! means "stored, and this instance answers by it". The local store keeps a copy of what was
//! applied (with every audit entry), read at the next start until etcd is reached.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, ConfigError, Problem, Published, Source, short_version};
use crate::directory::Directory;
use crate::fleet::{ConfigPointer, Fleet, FleetError, FleetEvent, FleetState, Record};
use crate::store::{AuditEntry, Change, ConfigVersion, DirectoryChange, StoredPlacement};

use super::super::directory::placement_of;
use super::super::live::{LiveState, compiled, toggles_named, unix_ms};
use super::super::snapshot::{Loaded, Prepare, Snapshot};
use super::{
    Applied, ApplyError, Manager, Pending, assemble_off_task, default_layout, refuse_last_drain,
    refuse_too_many_bans, with_counters,
};

/// How many fleet events may wait for the manager.
const EVENT_QUEUE: usize = 1024;

impl<P: Prepare> Manager<P> {
    /// Makes `fleet` (etcd) this manager's state backend; the store becomes the local copy.
    pub fn with_fleet(mut self, fleet: Fleet) -> Manager<P> {
        info!(
            instance = fleet.instance(),
            prefix = fleet.prefix(),
            "state backend: etcd"
        );
        self.metrics.state().set_backend_up(false);
        self.fleet = Some(fleet);
        self
    }

    /// Starts following the fleet's state; `None` with the embedded store.
    pub(super) fn follow_fleet(
        &self,
        shutdown: &CancellationToken,
    ) -> Option<mpsc::Receiver<FleetEvent>> {
        let fleet = self.fleet.clone()?;
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        tokio::spawn(fleet.clone().follow(tx, shutdown.clone()));
        let identity = self
            .publisher
            .current()
            .loaded
            .config
            .server
            .identity
            .clone();
        let (metrics, clock) = (self.metrics.clone(), self.clock.clone());
        let now = move || (metrics.state().revision(), unix_ms(clock.now()));
        tokio::spawn(fleet.register(identity.unwrap_or_default(), now, shutdown.clone()));
        Some(rx)
    }

    /// Stores `change` in etcd after the same safety rails as [`Manager::apply`]; the requester
    /// waits for the returned revision.
    pub(super) async fn apply_fleet(
        &self,
        fleet: &Fleet,
        change: Change,
        audit: AuditEntry,
        force: bool,
    ) -> Result<Applied, ApplyError> {
        if self.readiness.store_failing() {
            return Err(ApplyError::Unreachable(
                "the last attempt failed; waiting for it to return".to_owned(),
            ));
        }
        let current = self.publisher.current();
        let change = current.live.stamp(&current.loaded.config, change);
        let next = current.live.with(&change, audit.unix_ms);
        // The rail judged the drains of this revision: the transaction fails if any instance
        // stored a drain since, so two drains of the last datacenters cannot both pass it.
        let mut drains_at = None;
        if !force && let Change::Drain { key, drained: true } = &change {
            refuse_last_drain(&current, &next, key, &self.clock)?;
            drains_at = Some(current.live.revision);
        }
        refuse_too_many_bans(&change, &next)?;
        let buckets = match &change {
            // The whole map goes with a bucket move, and with a switch to a new pin generation.
            Change::Directory(_) => next.directory.as_ref().map(|d| {
                (0..d.n_buckets())
                    .map(|b| {
                        let p = d.bucket(b);
                        StoredPlacement {
                            home: d.dc_names()[usize::from(p.home)].clone(),
                            replica: d.dc_names()[usize::from(p.replica)].clone(),
                        }
                    })
                    .collect::<Vec<_>>()
            }),
            _ => None,
        };
        match fleet
            .commit(&change, &audit, buckets.as_deref(), drains_at)
            .await
        {
            Ok(revision) => Ok(Applied::At(revision)),
            Err(FleetError::Unavailable(why)) => {
                self.metrics.record_store_failure();
                self.metrics.state().set_backend_up(false);
                self.enter_read_only(&why, "apply", &audit.action, &audit.target);
                Err(ApplyError::Unreachable(why))
            }
            Err(
                error @ (FleetError::TooLarge { .. } | FleetError::Conflict | FleetError::Raced),
            ) => Err(ApplyError::Refused(error.to_string())),
            Err(error) => {
                warn!(%error, action = audit.action, target = audit.target, "etcd refused a write");
                Err(ApplyError::Fleet(error.to_string()))
            }
        }
    }

    /// Answers the writes whose revision this instance now serves; when etcd was just lost
    /// (`lost`), answers the others with the reason (they are stored, and applied when it returns).
    pub(super) fn answer_pending(&self, pending: &mut Vec<Pending>, lost: Option<&str>) {
        if pending.is_empty() {
            return;
        }
        let current = self.publisher.current();
        let revision = current.live.revision;
        let mut waiting = Vec::new();
        for (at, reply) in pending.drain(..) {
            if at <= revision {
                let _ = reply.send(Ok(current.generation));
            } else if let Some(why) = lost {
                let _ = reply.send(Err(ApplyError::Unreachable(format!(
                    "{why}; the write was stored at revision {at}, and this instance applies it when etcd returns"
                ))));
            } else {
                waiting.push((at, reply));
            }
        }
        *pending = waiting;
    }

    /// Applies one event of the fleet's follower; returns the fleet's configuration version
    /// when the event names one (with a revision to read it at).
    pub(super) async fn on_fleet_event(&self, event: FleetEvent) -> Option<(ConfigPointer, i64)> {
        match event {
            FleetEvent::Down(why) => {
                self.metrics.state().set_backend_up(false);
                // The follower retries often; the outage is announced once.
                if !self.readiness.store_failing() {
                    self.metrics.record_store_failure();
                    self.enter_read_only(&why, "watch", "follow", "etcd");
                }
            }
            FleetEvent::Up => {
                self.metrics.state().set_backend_up(true);
                self.store_writes();
            }
            FleetEvent::Synced(state) => {
                let config = state
                    .config
                    .clone()
                    .map(|pointer| (pointer, state.revision));
                self.synced(state).await;
                self.metrics.state().set_backend_up(true);
                self.store_writes();
                return config;
            }
            FleetEvent::Changed { revision, records } => {
                // Only the last version published matters; its pieces are there at `revision`.
                let config = records
                    .iter()
                    .rev()
                    .find_map(|record| record.config.clone())
                    .map(|pointer| (pointer, revision));
                self.changed(revision, records).await;
                return config;
            }
            FleetEvent::Resync { restored } => self.metrics.state().record_resync(restored),
        }
        None
    }

    /// Applies the records of one watch response, then copies them to the local store.
    async fn changed(&self, revision: i64, records: Vec<Record>) {
        let current = self.publisher.current();
        let own = self.fleet.as_ref().map(Fleet::instance);
        let mut live = (*current.live).clone();
        let mut local = Vec::with_capacity(records.len());
        for record in records {
            let change = match record.change {
                // Another instance's drain of itself is only audited here.
                Change::InstanceDrain { .. } if Some(record.origin.as_str()) != own => {
                    Change::AuditOnly
                }
                change => change,
            };
            live = live.with(&change, record.audit.unix_ms);
            local.push((change, record.audit));
        }
        live.revision = revision;
        self.publish_live(live);
        let store = self.store.clone();
        let copied = tokio::task::spawn_blocking(move || {
            local
                .iter()
                .try_for_each(|(change, audit)| store.apply(change, audit).map(drop))
        })
        .await
        .expect("store writes do not panic");
        if let Err(error) = copied {
            warn!(%error, revision, "could not copy the fleet's change to the local store");
        }
    }

    /// Replaces the shared part of the live state (reports, drains, directory) with the fleet's
    /// whole state; lays out the directory in etcd when no instance has yet.
    async fn synced(&self, state: FleetState) {
        let current = self.publisher.current();
        let config = &current.loaded.config;
        let mut live = (*current.live).clone();
        // A restored report stays unverified only while the fleet holds the same one.
        live.unverified
            .retain(|dc| state.reports.get(dc) == current.live.reports.get(dc));
        live.reports = state.reports.clone();
        live.drains = state.drains.clone();
        live.toggles = toggles_named(&state.toggles);
        live.banned = compiled(&state.banned, &live.banned);
        live.banned_rules = state.banned;
        live.revision = state.changed;
        let mut layout_needed = None;
        let mut directory_copy = None;
        if let Some(settings) = &config.directory {
            let buckets = match &state.buckets {
                Some(buckets) => buckets.clone(),
                None => {
                    let layout = default_layout(config, settings);
                    layout_needed = Some(layout.clone());
                    layout
                }
            };
            live.directory = Some(fleet_directory(config, &buckets, &state.pins));
            directory_copy = Some(DirectoryChange::Replace {
                n_buckets: buckets.len() as u32,
                buckets,
                pins: state.pins,
            });
        }
        self.publish_live(live);
        let store = self.store.clone();
        let (reports, drains) = (state.reports, state.drains);
        let copied = tokio::task::spawn_blocking(move || {
            store.mirror(&reports, &drains, directory_copy.as_ref())
        })
        .await
        .expect("store writes do not panic");
        if let Err(error) = copied {
            warn!(%error, "could not copy the fleet's state to the local store");
        }
        if let (Some(layout), Some(fleet)) = (layout_needed, &self.fleet) {
            let audit = AuditEntry {
                unix_ms: unix_ms(self.clock.now()),
                actor: "meridian".to_owned(),
                role: "fleet".to_owned(),
                action: "directory-layout".to_owned(),
                target: "directory".to_owned(),
                detail: serde_json::json!({ "buckets": layout.len(), "instance": fleet.instance() }),
            };
            match fleet.init_buckets(&layout, &audit).await {
                Ok(true) => info!(
                    buckets = layout.len(),
                    "laid out the fleet's user directory"
                ),
                Ok(false) => {}
                Err(error) => warn!(%error, "could not lay out the fleet's user directory"),
            }
        }
    }

    /// Publishes `live` with the serving configuration; returns its generation.
    pub(super) fn publish_live(&self, mut live: LiveState) -> u64 {
        let current = self.publisher.current();
        // Banned-query rules count on metrics resolved here; a removed rule's count goes.
        live.banned = live
            .banned
            .with_counters(|id| self.metrics.banned_counter(id));
        for id in current.live.banned_rules.keys() {
            if !live.banned_rules.contains_key(id) {
                self.metrics.forget_banned(id);
            }
        }
        let revision = live.revision;
        let snapshot = Snapshot::assemble(
            current.loaded.clone(),
            Arc::new(live),
            Some(&current),
            current.generation + 1,
            self.judge_time(),
        );
        if let Some(directory) = &snapshot.live.directory {
            self.metrics.set_pins(directory.n_pins() as u64);
        }
        let generation = snapshot.generation;
        self.publisher.publish(snapshot);
        self.metrics.state().set_revision(revision);
        self.after_publish(None);
        generation
    }
}

/// The next fleet event, or never with the embedded store.
pub(super) async fn next_event(
    events: &mut Option<mpsc::Receiver<FleetEvent>>,
) -> Option<FleetEvent> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// The directory of the fleet's bucket map and pins.
fn fleet_directory(
    config: &Config,
    buckets: &[StoredPlacement],
    pins: &[(String, StoredPlacement)],
) -> Directory {
    let mut names: Vec<String> = config
        .datacenters
        .iter()
        .map(|dc| dc.name.clone())
        .collect();
    let buckets: Vec<_> = buckets
        .iter()
        .map(|p| placement_of(&mut names, p))
        .collect();
    let pins: Vec<_> = pins
        .iter()
        .map(|(user, p)| (user.clone(), placement_of(&mut names, p)))
        .collect();
    Directory::new(names, buckets, pins)
}

/// How long an instance keeps trying to read a configuration version from etcd before it says
/// it cannot load it.
const READ_CONFIG_BUDGET: Duration = Duration::from_secs(5);

/// A load of the fleet's configuration version: the version, and the snapshot built from it.
type ConfigLoad<P> = JoinHandle<(String, Result<Snapshot<P>, ConfigError>)>;

/// A reload's requester waiting for the version it published to load here.
type ConfigWaiter = (String, oneshot::Sender<Result<u64, ConfigError>>);

/// The fleet's configuration as this instance follows it: kept by the manager's loop.
pub(super) struct FleetConfigs<P: Prepare> {
    /// The version the fleet serves, as last heard, and a revision to read it at.
    fleet: Option<(ConfigPointer, i64)>,
    /// The load running, if any.
    running: Option<ConfigLoad<P>>,
    /// The fleet's version changed while `running` ran: load again when it ends.
    again: bool,
    /// The version this instance last built itself (a reload it published): loaded from what
    /// it built, without reading etcd or the files again.
    built: Option<(String, Arc<Loaded<P>>)>,
    /// Reload requests waiting for the version they published to load here.
    waiting: Vec<ConfigWaiter>,
}

impl<P: Prepare> Default for FleetConfigs<P> {
    fn default() -> Self {
        FleetConfigs {
            fleet: None,
            running: None,
            again: false,
            built: None,
            waiting: Vec::new(),
        }
    }
}

impl<P: Prepare> FleetConfigs<P> {
    /// The load running, for the manager's loop to await.
    pub(super) fn running(&mut self) -> Option<&mut ConfigLoad<P>> {
        self.running.as_mut()
    }
}

/// What became of a reload with the etcd backend.
pub(super) enum Publishing {
    /// Answered now: it failed, or the fleet serves this version already and so does this
    /// instance.
    Done(Result<u64, ConfigError>),
    /// Published (or being loaded here): its requesters wait for this version to load here.
    Wait(String),
}

impl<P: Prepare> Manager<P> {
    /// A reload with the etcd backend: a configuration that loads here is published to the
    /// fleet (with the first requester's audit entry; the others' are written as audit-only
    /// records), and its requesters are answered once it serves here, which the watch brings
    /// about on every instance alike.
    pub(super) async fn publish_reload(
        &self,
        fleet: &Fleet,
        configs: &mut FleetConfigs<P>,
        built: Result<Snapshot<P>, ConfigError>,
        audits: Vec<AuditEntry>,
    ) -> Publishing {
        let built = match built {
            Ok(built) => built,
            Err(error) => {
                self.metrics.record_reload(false);
                warn!(source = %self.source, problems = error.problems.len(), "reload failed, nothing published to the fleet");
                for problem in &error.problems {
                    warn!("{problem}");
                }
                return Publishing::Done(Err(error));
            }
        };
        let loaded = built.loaded.clone();
        let version = loaded.config_version.clone();
        let mut audits = audits.into_iter();
        let audit = audits.next().unwrap_or_else(|| AuditEntry {
            unix_ms: unix_ms(self.clock.now()),
            actor: "meridian".to_owned(),
            role: "signal".to_owned(),
            action: "reload".to_owned(),
            target: "configuration".to_owned(),
            detail: serde_json::Value::Null,
        });
        let serving = self.publisher.current().loaded.config_version.clone();
        let published = configs.fleet.as_ref().map(|(p, _)| p.version.clone());
        let mut rest: Vec<AuditEntry> = audits.collect();
        if published.as_deref() == Some(version.as_str()) {
            // The fleet serves this version already: nothing to publish.
            rest.insert(0, audit);
            self.commit_audits(fleet, rest).await;
            if serving == version {
                return Publishing::Done(Ok(self.publisher.current().generation));
            }
            // This instance could not load it before; it can now.
            configs.built = Some((version.clone(), loaded));
            self.next_config_load(configs);
            return Publishing::Wait(version);
        }
        match fleet
            .publish_config(&self.stored_version(&loaded), &audit)
            .await
        {
            Ok(revision) => {
                info!(
                    version = short_version(&version),
                    revision, "published a configuration version to the fleet"
                );
                configs.built = Some((version.clone(), loaded));
                self.commit_audits(fleet, rest).await;
                Publishing::Wait(version)
            }
            Err(error) => {
                self.metrics.record_reload(false);
                let why = match error {
                    FleetError::Unavailable(why) => format!(
                        "the fleet's etcd is unreachable ({why}); the configuration was not published and every instance keeps serving its own"
                    ),
                    other => format!("the configuration was not published: {other}"),
                };
                warn!(reason = why, "reload failed");
                Publishing::Done(Err(ConfigError {
                    problems: vec![Problem::new(ETCD_PROBLEM_PATH, why)],
                }))
            }
        }
    }

    /// Writes the audit entries of reload requests that published nothing of their own.
    async fn commit_audits(&self, fleet: &Fleet, audits: Vec<AuditEntry>) {
        for audit in audits {
            if let Err(error) = fleet.commit(&Change::AuditOnly, &audit, None, None).await {
                warn!(%error, "could not audit a reload in etcd");
            }
        }
    }

    /// Registers requesters waiting for `version` to load here.
    pub(super) fn wait_for_config(
        &self,
        configs: &mut FleetConfigs<P>,
        version: String,
        replies: impl IntoIterator<Item = oneshot::Sender<Result<u64, ConfigError>>>,
    ) {
        for reply in replies {
            configs.waiting.push((version.clone(), reply));
        }
        // It may be serving already (its record came back before the requesters were
        // registered).
        self.answer_config_waiters(configs, &Ok(()));
    }

    /// Takes note of the fleet's configuration version (`pointer`, readable at `revision`)
    /// and loads it when this instance does not serve it.
    pub(super) fn heard_config(
        &self,
        configs: &mut FleetConfigs<P>,
        pointer: ConfigPointer,
        revision: i64,
    ) {
        configs.fleet = Some((pointer, revision));
        self.next_config_load(configs);
    }

    /// Starts loading the fleet's version unless a load runs (it then loads again when done) or
    /// this instance serves it already.
    fn next_config_load(&self, configs: &mut FleetConfigs<P>) {
        if configs.running.is_some() {
            configs.again = true;
            return;
        }
        let Some((pointer, revision)) = configs.fleet.clone() else {
            return;
        };
        let current = self.publisher.current();
        if pointer.version == current.loaded.config_version {
            self.set_config_rejected(None);
            self.answer_config_waiters(configs, &Ok(()));
            return;
        }
        let built = configs
            .built
            .as_ref()
            .filter(|(version, _)| *version == pointer.version)
            .map(|(_, loaded)| loaded.clone());
        configs.running = Some(self.start_config_load(pointer, revision, built));
    }

    /// Loads a version of the fleet off the manager's task: from what this instance built
    /// (`built`), or read from etcd and checked with this instance's own local files and
    /// sections, exactly as a reload checks files; then assembled with the live state.
    fn start_config_load(
        &self,
        pointer: ConfigPointer,
        revision: i64,
        built: Option<Arc<Loaded<P>>>,
    ) -> ConfigLoad<P> {
        let fleet = self.fleet.clone().expect("only with the etcd backend");
        let local = self.source.clone();
        let current = self.publisher.current();
        let metrics = self.metrics.clone();
        let now = self.judge_time();
        tokio::spawn(async move {
            let version = pointer.version.clone();
            let loaded = match built {
                Some(loaded) => Ok(loaded),
                None => match read_config(&fleet, &pointer, revision).await {
                    Ok(published) => {
                        let source = Source::Published(Arc::new(Published {
                            version: version.clone(),
                            text: published.text,
                            files: published
                                .files
                                .into_iter()
                                .map(|file| (file.name, file.text))
                                .collect(),
                            local,
                        }));
                        let previous = current.clone();
                        tokio::task::spawn_blocking(move || {
                            metrics.record_config_build();
                            let loaded = Loaded::<P>::reload(&source, Some(&previous.loaded))?;
                            if loaded.config_version != pointer.version {
                                return Err(ConfigError {
                                    problems: vec![Problem::new(
                                        ETCD_PROBLEM_PATH,
                                        format!(
                                            "the version read as {} is not the version published ({})",
                                            short_version(&loaded.config_version),
                                            short_version(&pointer.version)
                                        ),
                                    )],
                                });
                            }
                            Ok(Arc::new(with_counters(loaded, &metrics)))
                        })
                        .await
                        .expect("loading a configuration does not panic")
                    }
                    Err(error) => Err(ConfigError {
                        problems: vec![Problem::new(
                            ETCD_PROBLEM_PATH,
                            format!(
                                "could not read configuration version {} from etcd: {error}",
                                short_version(&version)
                            ),
                        )],
                    }),
                },
            };
            let built = match loaded {
                Ok(loaded) => tokio::task::spawn_blocking(move || {
                    Ok(assemble_off_task(loaded, &current, now))
                })
                .await
                .expect("assembling a snapshot does not panic"),
                Err(error) => Err(error),
            };
            (version, built)
        })
    }

    /// Publishes a loaded version of the fleet, or says why it could not be loaded (the previous
    /// version keeps serving: nothing of the new one is applied); then loads the fleet's newer
    /// version, if one was published meanwhile.
    pub(super) async fn finish_config_load(
        &self,
        configs: &mut FleetConfigs<P>,
        version: String,
        built: Result<Snapshot<P>, ConfigError>,
    ) {
        configs.running = None;
        let superseded = configs
            .fleet
            .as_ref()
            .is_some_and(|(pointer, _)| pointer.version != version);
        match built {
            Ok(_) if superseded => {}
            Ok(built) => {
                if let Err(error) = self.finish_reload(Ok(built), Vec::new()).await {
                    warn!(%error, "could not publish the fleet's configuration");
                }
                info!(
                    version = short_version(&version),
                    "serving the fleet's configuration version"
                );
                self.set_config_rejected(None);
            }
            Err(error) => {
                self.metrics.record_reload(false);
                let serving = self.publisher.current().loaded.config_version.clone();
                warn!(
                    version = short_version(&version),
                    serving = short_version(&serving),
                    problems = error.problems.len(),
                    "the fleet's configuration version cannot be loaded here; still serving the previous one"
                );
                for problem in &error.problems {
                    warn!("{problem}");
                }
                let first = error
                    .problems
                    .first()
                    .map_or_else(String::new, ToString::to_string);
                self.set_config_rejected(Some(format!(
                    "the fleet's configuration version {} could not be loaded here ({first}); still serving version {}",
                    short_version(&version),
                    short_version(&serving)
                )));
                self.answer_config_waiters(configs, &Err((version, error)));
            }
        }
        self.answer_config_waiters(configs, &Ok(()));
        if std::mem::take(&mut configs.again) || superseded {
            self.next_config_load(configs);
        }
    }

    /// Answers the reload requests whose version now serves here (`Ok`), or that failed to load
    /// here (`Err` with that version and why).
    fn answer_config_waiters(
        &self,
        configs: &mut FleetConfigs<P>,
        outcome: &Result<(), (String, ConfigError)>,
    ) {
        let current = self.publisher.current();
        let mut waiting = Vec::new();
        for (version, reply) in configs.waiting.drain(..) {
            match outcome {
                Err((failed, error)) if *failed == version => {
                    let _ = reply.send(Err(error.clone()));
                }
                _ if version == current.loaded.config_version => {
                    let _ = reply.send(Ok(current.generation));
                }
                _ => waiting.push((version, reply)),
            }
        }
        configs.waiting = waiting;
    }

    /// Says in the metric and `/readyz` whether this instance serves an older configuration
    /// than its fleet's, and why.
    fn set_config_rejected(&self, reason: Option<String>) {
        self.metrics.state().set_config_rejected(reason.is_some());
        self.readiness.set_config_rejected(reason);
    }
}

/// Where a reload's problem with the fleet's etcd (rather than with the configuration) is
/// reported: the control plane answers it with 503, not 422.
pub const ETCD_PROBLEM_PATH: &str = "state.etcd";

/// Reads a configuration version, retrying for [`READ_CONFIG_BUDGET`].
async fn read_config(
    fleet: &Fleet,
    pointer: &ConfigPointer,
    revision: i64,
) -> Result<ConfigVersion, FleetError> {
    let deadline = tokio::time::Instant::now() + READ_CONFIG_BUDGET;
    loop {
        match fleet.read_config(pointer, revision).await {
            Ok(version) => return Ok(version),
            Err(error) if tokio::time::Instant::now() >= deadline => return Err(error),
            Err(error) => {
                tracing::debug!(%error, "could not read the fleet's configuration; retrying");
                tokio::time::sleep(crate::fleet::RETRY_INTERVAL).await;
            }
        }
    }
}
